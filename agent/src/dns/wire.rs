//! DNS messages on the wire (RFC 1035 section 4, EDNS0 from RFC 6891): a
//! query parser that reads exactly what a stub resolver sends, and a builder
//! for the answers the agent writes itself.
//!
//! Reading is bounded and loop-safe: a name is at most 255 bytes, every
//! compression pointer must point before the label sequence that contains
//! it (so each jump goes strictly backwards and a chain always ends), and the
//! number of jumps is capped on top. Writing compresses names against the
//! ones already in the message (the question name first, so answers echo the
//! question's case) and never lets a message grow past its size limit: the
//! caller learns that a record did not fit and the message is rolled back.
//! Compression matches names byte for byte, so a name the agent synthesises
//! keeps its own (lowercase) spelling and an owner equal to the question
//! keeps the question's.

use std::net::Ipv4Addr;

/// Fixed header size.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire, root label included (RFC 1035 2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Longest label (RFC 1035 2.3.4).
const MAX_LABEL_LEN: usize = 63;
/// Most compression pointers followed in one name. A 255-byte name has at
/// most 127 labels, so no honest name needs more jumps than that.
const MAX_POINTER_HOPS: usize = 127;
/// Largest UDP message without EDNS (RFC 1035 4.2.1).
pub const CLASSIC_UDP_LIMIT: usize = 512;
/// Largest message over TCP (2-byte length prefix, RFC 1035 4.2.2).
pub const TCP_LIMIT: usize = 65_535;
/// Size of an OPT record with no options.
pub const OPT_LEN: usize = 11;

/// Record types used here.
pub mod rtype {
    pub const A: u16 = 1;
    pub const SOA: u16 = 6;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
}

/// Classes used here.
pub mod class {
    pub const IN: u16 = 1;
    pub const ANY: u16 = 255;
}

/// Response codes (the extended BADVERS needs an OPT record to carry it).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    pub const BADVERS: u16 = 16;
}

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;
const OPCODE_MASK: u16 = 0x7800;
const DO_BIT: u32 = 0x8000;

/// A domain name in uncompressed wire form (length-prefixed labels and the
/// root label), with the case it arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    wire: Vec<u8>,
}

impl Name {
    /// The root name `.`.
    pub fn root() -> Name {
        Name { wire: vec![0] }
    }

    /// Parses dotted text (`redis.default.svc.cluster.local`, a trailing dot
    /// allowed). `None` when a label is empty or longer than 63 bytes, or
    /// the name is longer than 255 bytes on the wire.
    pub fn from_text(text: &str) -> Option<Name> {
        let text = text.strip_suffix('.').unwrap_or(text);
        let mut wire = Vec::with_capacity(text.len() + 2);
        if !text.is_empty() {
            for label in text.split('.') {
                if label.is_empty() || label.len() > MAX_LABEL_LEN {
                    return None;
                }
                wire.push(u8::try_from(label.len()).ok()?);
                wire.extend_from_slice(label.as_bytes());
            }
        }
        wire.push(0);
        (wire.len() <= MAX_NAME_LEN).then_some(Name { wire })
    }

    /// The labels, leftmost first, without the root.
    pub fn labels(&self) -> Labels<'_> {
        Labels {
            wire: &self.wire,
            pos: 0,
        }
    }

    /// The wire form.
    pub fn as_wire(&self) -> &[u8] {
        &self.wire
    }

    /// Equal ignoring ASCII case (RFC 4343).
    pub fn eq_ignore_case(&self, other: &Name) -> bool {
        self.wire.eq_ignore_ascii_case(&other.wire)
    }

    /// Dotted text with a trailing dot, for logs and tests. Bytes outside
    /// printable ASCII are escaped as `\DDD`.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for label in self.labels() {
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    s.push(char::from(b));
                } else {
                    s.push_str(&format!("\\{b:03}"));
                }
            }
            s.push('.');
        }
        if s.is_empty() {
            s.push('.');
        }
        s
    }
}

/// Iterator over a name's labels.
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    wire: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(*self.wire.get(self.pos)?);
        if len == 0 {
            return None;
        }
        let label = self.wire.get(self.pos + 1..self.pos + 1 + len)?;
        self.pos += 1 + len;
        Some(label)
    }
}

/// The question of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

impl Question {
    /// Same question, names compared without case (how an answer is matched
    /// to the query it belongs to, RFC 5452 section 9.1).
    pub fn matches(&self, other: &Question) -> bool {
        self.qtype == other.qtype
            && self.qclass == other.qclass
            && self.name.eq_ignore_case(&other.name)
    }
}

/// EDNS0 parameters of a query (its OPT record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The requester's UDP payload size; values under 512 mean 512.
    pub udp_payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A query as far as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// The header flags word (opcode, RD, CD, ...).
    pub flags: u16,
    pub question: Question,
    pub edns: Option<Edns>,
}

impl Query {
    pub fn recursion_desired(&self) -> bool {
        self.flags & FLAG_RD != 0
    }
}

/// Why a message is not a query the agent can take. Those that carry `id`
/// and `flags` can still be answered with an error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("message of {0} bytes is shorter than a DNS header")]
    Short(usize),
    #[error("message is a response, not a query")]
    Response,
    #[error("message of {len} bytes is larger than any query needs ({max} bytes)")]
    Oversized {
        id: u16,
        flags: u16,
        len: usize,
        max: usize,
    },
    #[error("opcode {opcode} is not implemented (only QUERY)")]
    NotImplemented { id: u16, flags: u16, opcode: u16 },
    #[error("malformed query: {why}")]
    Malformed {
        id: u16,
        flags: u16,
        why: &'static str,
    },
    #[error("EDNS version {} is not supported (only 0)", edns.version)]
    BadVersion {
        id: u16,
        flags: u16,
        question: Question,
        edns: Edns,
    },
}

/// Parses a query of at most `max_len` bytes: the header, exactly one
/// question, and the other sections only to find and check an OPT record.
pub fn parse_query(msg: &[u8], max_len: usize) -> Result<Query, QueryError> {
    if msg.len() < HEADER_LEN {
        return Err(QueryError::Short(msg.len()));
    }
    let id = be16(msg, 0);
    let flags = be16(msg, 2);
    if flags & FLAG_QR != 0 {
        return Err(QueryError::Response);
    }
    if msg.len() > max_len {
        return Err(QueryError::Oversized {
            id,
            flags,
            len: msg.len(),
            max: max_len,
        });
    }
    let opcode = (flags & OPCODE_MASK) >> 11;
    if opcode != 0 {
        return Err(QueryError::NotImplemented { id, flags, opcode });
    }
    let malformed = |why| QueryError::Malformed { id, flags, why };
    let counts = [be16(msg, 4), be16(msg, 6), be16(msg, 8), be16(msg, 10)];
    if counts[0] != 1 {
        return Err(malformed("a query must carry exactly one question"));
    }
    let (question, mut pos) = read_question(msg, HEADER_LEN).map_err(malformed)?;
    // Answer and authority records are unusual in a query but legal; they
    // are skipped (checked for shape only).
    for _ in 0..u32::from(counts[1]) + u32::from(counts[2]) {
        pos = read_record(msg, pos).map_err(malformed)?.next;
    }
    let mut edns = None;
    for _ in 0..counts[3] {
        let rr = read_record(msg, pos).map_err(malformed)?;
        if rr.rtype == rtype::OPT {
            if edns.is_some() {
                return Err(malformed("more than one OPT record"));
            }
            if !rr.name_is_root {
                return Err(malformed("OPT record not owned by the root"));
            }
            edns = Some(Edns {
                udp_payload: rr.class,
                version: rr.ttl.to_be_bytes()[1],
                dnssec_ok: rr.ttl & DO_BIT != 0,
            });
        }
        pos = rr.next;
    }
    if pos != msg.len() {
        return Err(malformed("bytes after the last record"));
    }
    if let Some(e) = edns {
        if e.version != 0 {
            return Err(QueryError::BadVersion {
                id,
                flags,
                question,
                edns: e,
            });
        }
    }
    Ok(Query {
        id,
        flags,
        question,
        edns,
    })
}

/// The id and question of a response, to match it to a forwarded query.
/// `None` when it is not a response or has no readable question.
pub fn response_question(msg: &[u8]) -> Option<(u16, Question)> {
    if msg.len() < HEADER_LEN || be16(msg, 2) & FLAG_QR == 0 || be16(msg, 4) == 0 {
        return None;
    }
    let (q, _) = read_question(msg, HEADER_LEN).ok()?;
    Some((be16(msg, 0), q))
}

fn read_question(msg: &[u8], pos: usize) -> Result<(Question, usize), &'static str> {
    let (name, pos) = read_name(msg, pos)?;
    let fixed = msg.get(pos..pos + 4).ok_or("question cut short")?;
    Ok((
        Question {
            name,
            qtype: be16(fixed, 0),
            qclass: be16(fixed, 2),
        },
        pos + 4,
    ))
}

/// What [`read_record`] learns of a resource record.
pub(crate) struct RecordHead {
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    /// Whether the owner is the root name.
    pub name_is_root: bool,
    pub next: usize,
}

pub(crate) fn read_record(msg: &[u8], pos: usize) -> Result<RecordHead, &'static str> {
    let (name, pos) = read_name(msg, pos)?;
    let fixed = msg.get(pos..pos + 10).ok_or("record cut short")?;
    let rdlen = usize::from(be16(fixed, 8));
    let start = pos + 10;
    if msg.len() < start + rdlen {
        return Err("record data cut short");
    }
    Ok(RecordHead {
        rtype: be16(fixed, 0),
        class: be16(fixed, 2),
        ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        name_is_root: name.wire == [0],
        next: start + rdlen,
    })
}

/// Reads a possibly compressed name at `pos`; returns it and the position
/// after it in the message.
pub(crate) fn read_name(msg: &[u8], mut pos: usize) -> Result<(Name, usize), &'static str> {
    let mut wire = Vec::with_capacity(32);
    let mut after: Option<usize> = None;
    // Start of the label sequence being read: a pointer must go before it.
    let mut floor = pos;
    let mut hops = 0;
    loop {
        let len = *msg.get(pos).ok_or("name runs past the end")?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                wire.push(0);
                return Ok((Name { wire }, after.unwrap_or(pos + 1)));
            }
            0x00 => {
                let len = usize::from(len);
                let label = msg
                    .get(pos + 1..pos + 1 + len)
                    .ok_or("label runs past the end")?;
                if wire.len() + 1 + len + 1 > MAX_NAME_LEN {
                    return Err("name longer than 255 bytes");
                }
                wire.push(u8::try_from(len).map_err(|_| "label too long")?);
                wire.extend_from_slice(label);
                pos += 1 + len;
            }
            0xC0 => {
                let low = *msg.get(pos + 1).ok_or("pointer cut short")?;
                let target = usize::from(len & 0x3F) << 8 | usize::from(low);
                if target >= floor {
                    return Err("compression pointer does not point backwards");
                }
                hops += 1;
                if hops > MAX_POINTER_HOPS {
                    return Err("too many compression pointers");
                }
                after.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            _ => return Err("unknown label type"),
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Record data the agent writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
    Soa {
        mname: Name,
        rname: Name,
        serial: u32,
        refresh: u32,
        retry: u32,
        expire: u32,
        minimum: u32,
    },
    /// One character-string (at most 255 bytes).
    Txt(Vec<u8>),
}

impl RData {
    fn rtype(&self) -> u16 {
        match self {
            RData::A(_) => rtype::A,
            RData::Srv { .. } => rtype::SRV,
            RData::Soa { .. } => rtype::SOA,
            RData::Txt(_) => rtype::TXT,
        }
    }
}

/// A record in class IN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub owner: Name,
    pub ttl: u32,
    pub data: RData,
}

/// The header and question of a response, before records are added.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    pub id: u16,
    /// The query's flags: opcode, RD and CD are copied from it.
    pub query_flags: u16,
    pub authoritative: bool,
    /// Full response code, up to 12 bits (the upper 8 go in the OPT record).
    pub rcode: u16,
    pub question: Option<&'a Question>,
}

/// Builds a response within a size limit.
#[derive(Debug)]
pub struct Builder {
    buf: Vec<u8>,
    limit: usize,
    counts: [u16; 4],
    /// Names written so far, each suffix with its offset, for compression.
    names: Vec<(Vec<u8>, u16)>,
    rcode: u16,
    edns: Option<(u16, bool)>,
    /// The section being filled; sections are written in order.
    section: Section,
}

/// Sections of a message, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Answer = 1,
    Authority = 2,
    Additional = 3,
}

impl Builder {
    /// Starts a response of at most `limit` bytes. `edns` is `(payload size,
    /// DO bit)` for the OPT record the response carries when the query had
    /// one; its room is kept free from the start.
    pub fn new(head: ResponseHead<'_>, limit: usize, edns: Option<(u16, bool)>) -> Builder {
        let mut flags = FLAG_QR | FLAG_RA | (head.query_flags & (OPCODE_MASK | FLAG_RD | FLAG_CD));
        if head.authoritative {
            flags |= FLAG_AA;
        }
        flags |= head.rcode & 0x000F;
        let mut b = Builder {
            buf: Vec::with_capacity(CLASSIC_UDP_LIMIT),
            limit: limit.saturating_sub(if edns.is_some() { OPT_LEN } else { 0 }),
            counts: [0; 4],
            names: Vec::new(),
            rcode: head.rcode,
            edns,
            section: Section::Answer,
        };
        b.buf.extend_from_slice(&head.id.to_be_bytes());
        b.buf.extend_from_slice(&flags.to_be_bytes());
        b.buf.extend_from_slice(&[0; 8]);
        if let Some(q) = head.question {
            b.write_name(&q.name, true);
            b.buf.extend_from_slice(&q.qtype.to_be_bytes());
            b.buf.extend_from_slice(&q.qclass.to_be_bytes());
            b.counts[0] = 1;
        }
        b
    }

    /// Sets the TC bit.
    pub fn set_truncated(&mut self) {
        self.buf[2] |= FLAG_TC.to_be_bytes()[0];
    }

    /// Number of records in `section`.
    pub fn count(&self, section: Section) -> u16 {
        self.counts[section as usize]
    }

    /// Adds `rec` to `section`; `false` (and nothing added) when the message
    /// would grow past its limit, or `section` comes before one already
    /// written to (the sections of a message are in order).
    pub fn push(&mut self, section: Section, rec: &Record) -> bool {
        if section < self.section {
            return false;
        }
        self.section = section;
        let mark = self.buf.len();
        let names_mark = self.names.len();
        self.write_name(&rec.owner, true);
        self.buf.extend_from_slice(&rec.data.rtype().to_be_bytes());
        self.buf.extend_from_slice(&class::IN.to_be_bytes());
        self.buf.extend_from_slice(&rec.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match &rec.data {
            RData::A(ip) => self.buf.extend_from_slice(&ip.octets()),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                for v in [priority, weight, port] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
                // RFC 2782: the target is never compressed.
                self.write_name(target, false);
            }
            RData::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            } => {
                self.write_name(mname, true);
                self.write_name(rname, true);
                for v in [serial, refresh, retry, expire, minimum] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
            }
            RData::Txt(s) => {
                let s = &s[..s.len().min(255)];
                self.buf.push(u8::try_from(s.len()).unwrap_or(u8::MAX));
                self.buf.extend_from_slice(s);
            }
        }
        let rdlen = u16::try_from(self.buf.len() - len_at - 2);
        let count = &mut self.counts[section as usize];
        match rdlen {
            Ok(rdlen) if self.buf.len() <= self.limit && *count < u16::MAX => {
                *count += 1;
                self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
                true
            }
            _ => {
                self.buf.truncate(mark);
                self.names.truncate(names_mark);
                false
            }
        }
    }

    /// Removes every record of every section (after a truncation).
    pub fn clear_records(&mut self, question: Option<&Question>) {
        let end = HEADER_LEN
            + question.map_or(0, |q| {
                // The question is always written first, uncompressed.
                q.name.wire.len() + 4
            });
        self.buf.truncate(end);
        self.names.retain(|(_, off)| usize::from(*off) < end);
        self.counts[1..].fill(0);
        self.section = Section::Answer;
    }

    /// The finished message.
    pub fn finish(mut self) -> Vec<u8> {
        if let Some((payload, dnssec_ok)) = self.edns {
            let ttl = (u32::from(self.rcode >> 4) << 24) | if dnssec_ok { DO_BIT } else { 0 };
            self.buf.push(0);
            self.buf.extend_from_slice(&rtype::OPT.to_be_bytes());
            self.buf.extend_from_slice(&payload.to_be_bytes());
            self.buf.extend_from_slice(&ttl.to_be_bytes());
            self.buf.extend_from_slice(&[0, 0]);
            self.counts[3] += 1;
        }
        for (i, c) in self.counts.iter().enumerate() {
            self.buf[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        self.buf
    }

    /// Writes `name`, pointing at an earlier copy of its longest known
    /// suffix when `compress`; records its suffixes for later names.
    fn write_name(&mut self, name: &Name, compress: bool) {
        let wire = &name.wire;
        let mut starts = Vec::with_capacity(8);
        let mut i = 0;
        while wire[i] != 0 {
            starts.push(i);
            i += 1 + usize::from(wire[i]);
        }
        let start = self.buf.len();
        for &s in &starts {
            let suffix = &wire[s..];
            if compress {
                if let Some(&(_, off)) = self
                    .names
                    .iter()
                    .find(|(known, _)| known.as_slice() == suffix)
                {
                    self.buf.extend_from_slice(&wire[..s]);
                    self.buf.extend_from_slice(&(0xC000 | off).to_be_bytes());
                    self.remember(wire, &starts, start, s);
                    return;
                }
            }
        }
        self.buf.extend_from_slice(wire);
        self.remember(wire, &starts, start, wire.len());
    }

    /// Records the suffixes of `wire` that start before `upto` (those written
    /// out in full at `at`).
    fn remember(&mut self, wire: &[u8], starts: &[usize], at: usize, upto: usize) {
        for &s in starts.iter().take_while(|&&s| s < upto) {
            // Pointers have 14 bits; names beyond that are written in full.
            if let Ok(off) = u16::try_from(at + s) {
                if off < 0x4000 {
                    self.names.push((wire[s..].to_vec(), off));
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A small decoder for what the builder writes, so tests can read
    //! answers back (and exercise decompression on real output).
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Rr {
        pub name: String,
        pub rtype: u16,
        pub ttl: u32,
        /// A: the address; SRV: "prio weight port target"; SOA: "mname rname
        /// minimum"; TXT: the text; others: byte count.
        pub data: String,
    }

    #[derive(Debug, Clone)]
    pub struct Parsed {
        pub id: u16,
        pub flags: u16,
        pub rcode: u16,
        pub question: Option<Question>,
        pub answers: Vec<Rr>,
        pub authority: Vec<Rr>,
        pub additional: Vec<Rr>,
        pub edns_payload: Option<u16>,
    }

    impl Parsed {
        pub fn tc(&self) -> bool {
            self.flags & FLAG_TC != 0
        }
        pub fn aa(&self) -> bool {
            self.flags & FLAG_AA != 0
        }
        pub fn answer_data(&self) -> Vec<&str> {
            self.answers.iter().map(|r| r.data.as_str()).collect()
        }
    }

    pub fn parse(msg: &[u8]) -> Parsed {
        assert!(msg.len() >= HEADER_LEN, "short response");
        let flags = be16(msg, 2);
        assert!(flags & FLAG_QR != 0, "not a response");
        let counts = [be16(msg, 4), be16(msg, 6), be16(msg, 8), be16(msg, 10)];
        let mut pos = HEADER_LEN;
        let mut question = None;
        if counts[0] == 1 {
            let (q, p) = read_question(msg, pos).expect("question");
            question = Some(q);
            pos = p;
        }
        let mut sections: [Vec<Rr>; 3] = Default::default();
        let mut rcode = flags & 0xF;
        let mut edns_payload = None;
        for (i, section) in sections.iter_mut().enumerate() {
            for _ in 0..counts[i + 1] {
                let (name, fixed) = read_name(msg, pos).expect("owner");
                let rr = read_record(msg, pos).expect("record");
                let start = fixed + 10;
                let rd = &msg[start..rr.next];
                let data = match rr.rtype {
                    rtype::A => Ipv4Addr::new(rd[0], rd[1], rd[2], rd[3]).to_string(),
                    rtype::SRV => {
                        let (target, _) = read_name(msg, start + 6).expect("target");
                        format!(
                            "{} {} {} {}",
                            be16(rd, 0),
                            be16(rd, 2),
                            be16(rd, 4),
                            target.to_text()
                        )
                    }
                    rtype::SOA => {
                        let (m, p) = read_name(msg, start).expect("mname");
                        let (r, p) = read_name(msg, p).expect("rname");
                        let minimum = u32::from_be_bytes([
                            msg[p + 16],
                            msg[p + 17],
                            msg[p + 18],
                            msg[p + 19],
                        ]);
                        format!("{} {} {minimum}", m.to_text(), r.to_text())
                    }
                    rtype::TXT => String::from_utf8_lossy(&rd[1..]).into_owned(),
                    rtype::OPT => {
                        edns_payload = Some(rr.class);
                        rcode |= u16::from(rr.ttl.to_be_bytes()[0]) << 4;
                        pos = rr.next;
                        continue;
                    }
                    _ => format!("{} bytes", rd.len()),
                };
                section.push(Rr {
                    name: name.to_text(),
                    rtype: rr.rtype,
                    ttl: rr.ttl,
                    data,
                });
                pos = rr.next;
            }
        }
        assert_eq!(pos, msg.len(), "trailing bytes");
        let [answers, authority, additional] = sections;
        Parsed {
            id: be16(msg, 0),
            flags,
            rcode,
            question,
            answers,
            authority,
            additional,
            edns_payload,
        }
    }

    /// A query as a stub resolver sends it: RD set, one question, an OPT
    /// record when `edns` gives a payload size.
    pub fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&FLAG_RD.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        for label in name
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
        {
            m.push(u8::try_from(label.len()).unwrap());
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&class::IN.to_be_bytes());
        if let Some(size) = edns {
            m.push(0);
            m.extend_from_slice(&rtype::OPT.to_be_bytes());
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1232;

    fn head(q: &Question) -> ResponseHead<'_> {
        ResponseHead {
            id: 7,
            query_flags: FLAG_RD,
            authoritative: true,
            rcode: rcode::NOERROR,
            question: Some(q),
        }
    }

    #[test]
    fn parses_a_plain_query_and_its_edns() {
        let q = parse_query(
            &query(0xBEEF, "Web.Default.svc.cluster.local", 1, None),
            MAX,
        )
        .unwrap();
        assert_eq!(q.id, 0xBEEF);
        assert!(q.recursion_desired());
        assert_eq!(q.question.name.to_text(), "Web.Default.svc.cluster.local.");
        assert_eq!((q.question.qtype, q.question.qclass), (1, 1));
        assert_eq!(q.edns, None);
        let q = parse_query(&query(1, "example.com", 28, Some(4096)), MAX).unwrap();
        assert_eq!(
            q.edns,
            Some(Edns {
                udp_payload: 4096,
                version: 0,
                dnssec_ok: false
            })
        );
    }

    /// Header with QDCOUNT 1 followed by `body`.
    fn raw(body: &[u8], arcount: u8) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, arcount];
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn rejects_malformed_and_hostile_queries() {
        let long_label = {
            let mut b = vec![64];
            b.extend_from_slice(&[b'a'; 64]);
            b.extend_from_slice(&[0, 0, 1, 0, 1]);
            b
        };
        let too_long_name = {
            let mut b = Vec::new();
            for _ in 0..5 {
                b.push(63);
                b.extend_from_slice(&[b'a'; 63]);
            }
            b.extend_from_slice(&[0, 0, 1, 0, 1]);
            b
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "shorter"),
            ("header cut", vec![0; 11], "shorter"),
            (
                "response",
                {
                    let mut m = query(1, "a", 1, None);
                    m[2] |= 0x80;
                    m
                },
                "response",
            ),
            (
                "no question",
                vec![0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                "exactly one",
            ),
            (
                "two questions",
                {
                    let mut m = query(1, "a", 1, None);
                    m[5] = 2;
                    m
                },
                "exactly one",
            ),
            ("name runs out", raw(&[3, b'a', b'b'], 0), "past the end"),
            ("no qtype", raw(&[1, b'a', 0, 0], 0), "cut short"),
            ("label of 64", raw(&long_label, 0), "unknown label type"),
            ("name over 255", raw(&too_long_name, 0), "longer than 255"),
            (
                "pointer to itself",
                raw(&[0xC0, 12, 0, 1, 0, 1], 0),
                "backwards",
            ),
            (
                "pointer forward",
                raw(&[0xC0, 20, 0, 1, 0, 1, 0, 0, 0, 0], 0),
                "backwards",
            ),
            // The question "a." then an additional record whose name is
            // "b" + pointer to itself: a loop through a backward pointer.
            (
                "pointer loop",
                raw(
                    &[
                        1, b'a', 0, 0, 1, 0, 1, 1, b'b', 0xC0, 19, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0,
                    ],
                    1,
                ),
                "backwards",
            ),
            (
                "extended label",
                raw(&[0x41, 0, 0, 1, 0, 1], 0),
                "unknown label type",
            ),
            (
                "trailing bytes",
                {
                    let mut m = query(1, "a", 1, None);
                    m.push(0);
                    m
                },
                "bytes after",
            ),
            (
                "record data cut",
                raw(&[0, 0, 1, 0, 1, 0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 9, 1], 1),
                "cut short",
            ),
            (
                "two OPTs",
                {
                    let mut m = raw(&[0, 0, 1, 0, 1], 2);
                    for _ in 0..2 {
                        m.extend_from_slice(&[0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0]);
                    }
                    m
                },
                "more than one OPT",
            ),
            (
                "OPT not at root",
                raw(
                    &[0, 0, 1, 0, 1, 1, b'x', 0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0],
                    1,
                ),
                "root",
            ),
            (
                "oversized",
                {
                    let mut m = raw(&[0, 0, 1, 0, 1], 1);
                    m.extend_from_slice(&[0, 0, 99, 0, 1, 0, 0, 0, 0, 0x05, 0x00]);
                    m.extend_from_slice(&[0; 1280]);
                    m
                },
                "larger than",
            ),
            (
                "notify opcode",
                {
                    let mut m = query(1, "a", 1, None);
                    m[2] = 0x20;
                    m
                },
                "opcode 4",
            ),
        ];
        for (what, msg, want) in cases {
            let err = parse_query(&msg, MAX).expect_err(what);
            assert!(err.to_string().contains(want), "{what}: {err}");
        }
    }

    #[test]
    fn follows_backward_pointers_in_what_it_reads() {
        // Question "a.b.", then an answer-section record owned by "x" and a
        // pointer to the question name.
        let mut m = vec![0, 9, 0x01, 0x00, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 1, b'b', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[1, b'x', 0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1]);
        parse_query(&m, MAX).unwrap();
        let (name, next) = read_name(&m, 21).unwrap();
        assert_eq!(name.to_text(), "x.a.b.");
        assert_eq!(next, 25);
    }

    #[test]
    fn bad_edns_version_keeps_the_question() {
        let mut m = query(5, "a.example", 1, Some(1232));
        let ttl_at = m.len() - 5;
        m[ttl_at] = 1;
        match parse_query(&m, MAX) {
            Err(QueryError::BadVersion { question, edns, .. }) => {
                assert_eq!(question.name.to_text(), "a.example.");
                assert_eq!(edns.version, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn builder_compresses_against_the_question_and_keeps_cases() {
        let q = Question {
            name: Name::from_text("_HTTP._tcp.Web.ns.svc.cluster.local").unwrap(),
            qtype: rtype::SRV,
            qclass: class::IN,
        };
        let mut b = Builder::new(head(&q), 512, Some((1232, false)));
        let target = Name::from_text("web.ns.svc.cluster.local").unwrap();
        assert!(b.push(
            Section::Answer,
            &Record {
                owner: q.name.clone(),
                ttl: 5,
                data: RData::Srv {
                    priority: 0,
                    weight: 100,
                    port: 80,
                    target: target.clone()
                }
            }
        ));
        assert!(b.push(
            Section::Additional,
            &Record {
                owner: target,
                ttl: 5,
                data: RData::A(Ipv4Addr::new(10, 96, 0, 1))
            }
        ));
        let msg = b.finish();
        let p = parse(&msg);
        assert_eq!(p.answers[0].name, "_HTTP._tcp.Web.ns.svc.cluster.local.");
        // The SRV target is written in full (RFC 2782), the additional
        // record's owner then points into it.
        assert_eq!(p.answers[0].data, "0 100 80 web.ns.svc.cluster.local.");
        assert_eq!(p.additional[0].name, "web.ns.svc.cluster.local.");
        assert_eq!(p.edns_payload, Some(1232));
        // Owner of the answer is a 2-byte pointer to offset 12.
        let qlen = q.name.as_wire().len();
        assert_eq!(&msg[12 + qlen + 4..12 + qlen + 6], &[0xC0, 12]);
    }

    #[test]
    fn builder_refuses_records_past_its_limit() {
        let q = Question {
            name: Name::from_text("h.ns.svc.cluster.local").unwrap(),
            qtype: rtype::A,
            qclass: class::IN,
        };
        let mut b = Builder::new(head(&q), 100, None);
        let mut n = 0;
        while b.push(
            Section::Answer,
            &Record {
                owner: q.name.clone(),
                ttl: 5,
                data: RData::A(Ipv4Addr::new(10, 0, 0, n)),
            },
        ) {
            n += 1;
        }
        let msg = b.finish();
        assert!(msg.len() <= 100, "{}", msg.len());
        // 12 header + 28 question, then 16 bytes per compressed A record.
        assert_eq!(n, 3);
        assert_eq!(parse(&msg).answers.len(), 3);
    }

    fn arb_name() -> impl Strategy<Value = Name> {
        // Few distinct labels, so names share suffixes and compress.
        let label = prop_oneof![
            Just("a".to_string()),
            Just("Svc".to_string()),
            Just("cluster".to_string()),
            "[a-zA-Z0-9-]{1,63}",
        ];
        proptest::collection::vec(label, 0..6).prop_filter_map("fits 255 bytes", |labels| {
            Name::from_text(&labels.join("."))
        })
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        let data = prop_oneof![
            any::<[u8; 4]>().prop_map(|ip| RData::A(ip.into())),
            (any::<u16>(), any::<u16>(), any::<u16>(), arb_name()).prop_map(
                |(priority, weight, port, target)| RData::Srv {
                    priority,
                    weight,
                    port,
                    target
                }
            ),
            (arb_name(), arb_name(), any::<u32>()).prop_map(|(mname, rname, minimum)| {
                RData::Soa {
                    mname,
                    rname,
                    serial: 1,
                    refresh: 2,
                    retry: 3,
                    expire: 4,
                    minimum,
                }
            }),
        ];
        (arb_name(), any::<u32>(), data).prop_map(|(owner, ttl, data)| Record { owner, ttl, data })
    }

    /// How [`parse`] shows a record, to compare what went in with what
    /// came out.
    fn shown(r: &Record) -> (String, u32, String) {
        let data = match &r.data {
            RData::A(ip) => ip.to_string(),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => format!("{priority} {weight} {port} {}", target.to_text()),
            RData::Soa {
                mname,
                rname,
                minimum,
                ..
            } => format!("{} {} {minimum}", mname.to_text(), rname.to_text()),
            RData::Txt(t) => String::from_utf8_lossy(t).into_owned(),
        };
        (r.owner.to_text(), r.ttl, data)
    }

    proptest! {
        /// Whatever the builder writes reads back as written (compression
        /// included), and stays within its limit.
        #[test]
        fn builder_output_reads_back(
            qname in arb_name(),
            records in proptest::collection::vec((arb_record(), 0..3usize), 0..40),
            limit in 100usize..2000,
            edns in any::<bool>(),
        ) {
            let q = Question { name: qname, qtype: rtype::A, qclass: class::IN };
            let mut b = Builder::new(head(&q), limit, edns.then_some((1232, false)));
            let mut kept: [Vec<(String, u32, String)>; 3] = Default::default();
            for (r, s) in &records {
                let section = [Section::Answer, Section::Authority, Section::Additional][*s];
                if b.push(section, r) {
                    kept[*s].push(shown(r));
                }
            }
            let msg = b.finish();
            prop_assert!(msg.len() <= limit.max(12 + q.name.as_wire().len() + 4 + OPT_LEN));
            let p = parse(&msg);
            let got = [&p.answers, &p.authority, &p.additional]
                .map(|rrs| rrs.iter().map(|r| (r.name.clone(), r.ttl, r.data.clone())).collect::<Vec<_>>());
            prop_assert_eq!(got, kept);
            prop_assert_eq!(p.edns_payload, edns.then_some(1232));
            prop_assert!(p.question.unwrap().matches(&q));
        }
    }

    #[test]
    fn names_from_text() {
        assert_eq!(Name::from_text("").unwrap().as_wire(), &[0]);
        assert_eq!(Name::from_text(".").unwrap(), Name::root());
        assert!(Name::from_text("a..b").is_none());
        assert!(Name::from_text(&"a".repeat(64)).is_none());
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(Name::from_text(&long).is_none());
        assert_eq!(
            Name::from_text("A.b.")
                .unwrap()
                .labels()
                .collect::<Vec<_>>(),
            vec![b"A".as_slice(), b"b"]
        );
    }
}
