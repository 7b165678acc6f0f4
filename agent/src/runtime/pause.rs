//! The pause image: the tiny container that holds each pod's network
//! namespace, made on the box itself with no registry.
//!
//! Every container of a pod joins the pause container's network namespace
//! (`network_mode: container:<id>`), so the pod keeps one IP address and its
//! ports across container restarts. The pause process only has to block
//! forever; Kubernetes ships a C program for it, Outpost hand-assembles a
//! static ELF of a few instructions per architecture ([`pause_elf`]), wraps
//! it in a one-file root filesystem tarball and imports that with the
//! engine's `POST /images/create?fromSrc=-` ([`ensure_pause_image`]). No
//! pull, no build, nothing downloaded: an air-gapped box can start pods.
//!
//! The process is PID 1 of its PID namespace and installs no signal
//! handler, so the kernel drops SIGTERM and SIGINT for it: stop it with
//! SIGKILL (`docker kill`, or a stop timeout of 0), as nothing in it needs a
//! graceful exit.

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

/// Repository of the pause image.
pub const PAUSE_REPO: &str = "outpost/pause";

/// Version of the pause binary; bump it whenever [`pause_elf`]'s output
/// changes so boxes import the new one instead of keeping the old tag.
pub const PAUSE_VERSION: u32 = 1;

/// Path of the binary inside the image.
const PAUSE_PATH: &str = "/pause";

/// `outpost/pause:1-<arch>` for this build's architecture, in Go spelling
/// (`amd64`, `arm64`, `arm`) as the node reports it.
pub fn pause_image_ref() -> String {
    format!(
        "{PAUSE_REPO}:{}",
        pause_tag(crate::probe::go_arch(std::env::consts::ARCH))
    )
}

fn pause_tag(go_arch: &str) -> String {
    format!("{PAUSE_VERSION}-{go_arch}")
}

/// Makes sure the pause image exists in the engine and returns its
/// reference ([`pause_image_ref`]), importing it when absent. `docker` must
/// speak an API version the engine accepts (see `Docker::negotiate_version`).
pub async fn ensure_pause_image(docker: &bollard::Docker) -> Result<String, String> {
    let image = pause_image_ref();
    match docker.inspect_image(&image).await {
        Ok(_) => return Ok(image),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(format!("cannot look up the pause image {image}: {e}")),
    }
    import_pause_image(docker, &image).await?;
    Ok(image)
}

/// Imports the pause image under `image` (`repo:tag`), replacing any image
/// of that name: a root filesystem holding only `/pause` (mode 0755) with
/// `CMD ["/pause"]`, through `POST /images/create?fromSrc=-`.
pub async fn import_pause_image(docker: &bollard::Docker, image: &str) -> Result<(), String> {
    let arch = std::env::consts::ARCH;
    let elf = pause_elf(arch).ok_or_else(|| {
        format!(
            "no pause binary for architecture {arch}: Outpost assembles it for x86_64, aarch64 and arm; \
             load an image named {image} whose command blocks forever"
        )
    })?;
    let (repo, tag) = match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    };
    let rootfs = single_file_tar(PAUSE_PATH.trim_start_matches('/'), 0o755, &elf);
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .message("outpost pause: holds a pod's network namespace")
        .changes(vec![format!("CMD [\"{PAUSE_PATH}\"]")])
        .build();
    let mut progress =
        docker.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
    while let Some(item) = progress.next().await {
        item.map_err(|e| format!("importing the pause image {image} failed: {e}"))?;
    }
    docker
        .inspect_image(image)
        .await
        .map_err(|e| format!("imported the pause image but cannot find {image}: {e}"))?;
    Ok(())
}

// The pause program per architecture: block in a syscall, and again if a
// signal interrupts it.

/// x86_64: `pause()` (syscall 34) in a loop.
const X86_64_CODE: [u8; 9] = [
    0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, 34    ; __NR_pause
    0x0f, 0x05, //                   syscall
    0xeb, 0xf7, //                   jmp -9         ; back to mov
];

/// aarch64 has no `pause`: `ppoll(NULL, 0, NULL, NULL)` (syscall 73) blocks
/// until a signal arrives. A64 instructions, little-endian words.
const AARCH64_CODE: [u32; 7] = [
    0xd280_0000, // movz x0, #0        ; fds = NULL
    0xd280_0001, // movz x1, #0        ; nfds = 0
    0xd280_0002, // movz x2, #0        ; timeout = NULL: forever
    0xd280_0003, // movz x3, #0        ; sigmask = NULL
    0xd280_0928, // movz x8, #73       ; __NR_ppoll (73 << 5 | 8)
    0xd400_0001, // svc #0
    0x17ff_fffa, // b -24 (imm26 = -6) ; back to the first movz
];

/// 32-bit ARM EABI, ARM state: `pause()` (syscall 29) in a loop.
const ARM_CODE: [u32; 3] = [
    0xe3a0_701d, // mov r7, #29        ; __NR_pause
    0xef00_0000, // svc #0
    0xeaff_fffc, // b -8 (imm24 = -4, pc reads 8 ahead) ; back to mov
];

/// Load address of the one segment: the linkers' usual default per
/// architecture, a multiple of the largest page size each may use.
const X86_64_BASE: u64 = 0x40_0000;
const AARCH64_BASE: u64 = 0x40_0000;
const ARM_BASE: u32 = 0x1_0000;

const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
/// `EF_ARM_EABI_VER5`.
const EF_ARM_EABI_VER5: u32 = 0x0500_0000;

const ELF64_EHDR: usize = 64;
const ELF64_PHDR: usize = 56;
const ELF32_EHDR: usize = 52;
const ELF32_PHDR: usize = 32;

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_R: u32 = 4;
const ET_EXEC: u16 = 2;

/// A minimal static executable that blocks forever, for a Rust
/// `target_arch` (`std::env::consts::ARCH`): `x86_64`, `aarch64` or `arm`;
/// `None` for anything else.
///
/// Layout (no sections, no interpreter, nothing dynamic):
///
/// ```text
/// offset 0                      ELF header (64 bytes; ELF32: 52)
/// offset 64                     one PT_LOAD program header (56; ELF32: 32)
/// offset 120 (ELF32: 84)        code; the entry point
/// ```
///
/// The single segment maps the whole file, headers included, at the base
/// address with read and execute permission; the entry point is the base
/// plus the code's offset. Both offsets are multiples of 4, as A64 and ARM
/// instructions require.
pub fn pause_elf(arch: &str) -> Option<Vec<u8>> {
    match arch {
        "x86_64" => elf64(EM_X86_64, X86_64_BASE, 0x1000, &X86_64_CODE),
        "aarch64" => {
            let code: Vec<u8> = AARCH64_CODE.iter().flat_map(|w| w.to_le_bytes()).collect();
            // 64 KiB pages are common on arm64 servers.
            elf64(EM_AARCH64, AARCH64_BASE, 0x1_0000, &code)
        }
        "arm" => {
            let code: Vec<u8> = ARM_CODE.iter().flat_map(|w| w.to_le_bytes()).collect();
            elf32_arm(&code)
        }
        _ => None,
    }
}

/// `e_ident`: magic, class, little-endian, version 1, System V ABI, padding.
fn ident(class64: bool) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(b"\x7fELF");
    id[4] = if class64 { 2 } else { 1 };
    id[5] = 1; // ELFDATA2LSB
    id[6] = 1; // EV_CURRENT
    id
}

fn elf64(machine: u16, base: u64, align: u64, code: &[u8]) -> Option<Vec<u8>> {
    let code_offset = ELF64_EHDR + ELF64_PHDR;
    let total = u64::try_from(code_offset + code.len()).ok()?;
    let entry = base + u64::try_from(code_offset).ok()?;
    let mut f = Vec::with_capacity(code_offset + code.len());
    f.extend_from_slice(&ident(true));
    f.extend_from_slice(&ET_EXEC.to_le_bytes()); // e_type
    f.extend_from_slice(&machine.to_le_bytes()); // e_machine
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&entry.to_le_bytes()); // e_entry
    f.extend_from_slice(&u64::try_from(ELF64_EHDR).ok()?.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&u16::try_from(ELF64_EHDR).ok()?.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&u16::try_from(ELF64_PHDR).ok()?.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize (Elf64_Shdr)
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    debug_assert_eq!(f.len(), ELF64_EHDR);
    f.extend_from_slice(&PT_LOAD.to_le_bytes()); // p_type
    f.extend_from_slice(&(PF_R | PF_X).to_le_bytes()); // p_flags
    f.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    f.extend_from_slice(&base.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&base.to_le_bytes()); // p_paddr
    f.extend_from_slice(&total.to_le_bytes()); // p_filesz
    f.extend_from_slice(&total.to_le_bytes()); // p_memsz
    f.extend_from_slice(&align.to_le_bytes()); // p_align
    debug_assert_eq!(f.len(), code_offset);
    f.extend_from_slice(code);
    Some(f)
}

fn elf32_arm(code: &[u8]) -> Option<Vec<u8>> {
    let code_offset = ELF32_EHDR + ELF32_PHDR;
    let total = u32::try_from(code_offset + code.len()).ok()?;
    let entry = ARM_BASE + u32::try_from(code_offset).ok()?;
    let mut f = Vec::with_capacity(code_offset + code.len());
    f.extend_from_slice(&ident(false));
    f.extend_from_slice(&ET_EXEC.to_le_bytes()); // e_type
    f.extend_from_slice(&EM_ARM.to_le_bytes()); // e_machine
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&entry.to_le_bytes()); // e_entry (bit 0 clear: ARM state)
    f.extend_from_slice(&u32::try_from(ELF32_EHDR).ok()?.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
    f.extend_from_slice(&EF_ARM_EABI_VER5.to_le_bytes()); // e_flags
    f.extend_from_slice(&u16::try_from(ELF32_EHDR).ok()?.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&u16::try_from(ELF32_PHDR).ok()?.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&40u16.to_le_bytes()); // e_shentsize (Elf32_Shdr)
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    debug_assert_eq!(f.len(), ELF32_EHDR);
    // Elf32_Phdr orders its fields differently from Elf64_Phdr: flags last.
    f.extend_from_slice(&PT_LOAD.to_le_bytes()); // p_type
    f.extend_from_slice(&0u32.to_le_bytes()); // p_offset
    f.extend_from_slice(&ARM_BASE.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&ARM_BASE.to_le_bytes()); // p_paddr
    f.extend_from_slice(&total.to_le_bytes()); // p_filesz
    f.extend_from_slice(&total.to_le_bytes()); // p_memsz
    f.extend_from_slice(&(PF_R | PF_X).to_le_bytes()); // p_flags
    f.extend_from_slice(&0x1000u32.to_le_bytes()); // p_align
    debug_assert_eq!(f.len(), code_offset);
    f.extend_from_slice(code);
    Some(f)
}

const TAR_BLOCK: usize = 512;

/// A ustar archive holding one regular file owned by root, mtime 0 (the
/// image is the same on every box), ended by the two zero blocks.
fn single_file_tar(name: &str, mode: u32, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; TAR_BLOCK];
    let put = |h: &mut [u8; TAR_BLOCK], at: usize, bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
    };
    // Longer names would need the prefix field; ours is "pause".
    let name = &name.as_bytes()[..name.len().min(99)];
    put(&mut header, 0, name);
    put(&mut header, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut header, 108, b"0000000\0"); // uid
    put(&mut header, 116, b"0000000\0"); // gid
    put(
        &mut header,
        124,
        format!("{:011o}\0", content.len()).as_bytes(),
    );
    put(&mut header, 136, b"00000000000\0"); // mtime
    header[156] = b'0'; // regular file
    put(&mut header, 257, b"ustar\0");
    put(&mut header, 263, b"00");
    put(&mut header, 265, b"root");
    put(&mut header, 297, b"root");
    let sum = tar_checksum(&header);
    put(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());

    let padded = content.len().div_ceil(TAR_BLOCK) * TAR_BLOCK;
    let mut out = Vec::with_capacity(TAR_BLOCK + padded + 2 * TAR_BLOCK);
    out.extend_from_slice(&header);
    out.extend_from_slice(content);
    out.resize(TAR_BLOCK + padded + 2 * TAR_BLOCK, 0);
    out
}

/// The ustar checksum: the unsigned sum of the header's bytes with the
/// checksum field itself counted as eight spaces.
fn tar_checksum(header: &[u8; TAR_BLOCK]) -> u32 {
    header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(*b)
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Reads an ELF64 file back the way the kernel's loader does and checks
    /// every field it relies on.
    fn check_elf64(elf: &[u8], machine: u16, base: u64, align: u64, code: &[u8]) {
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf[4], 2, "ELFCLASS64");
        assert_eq!(elf[5], 1, "little-endian");
        assert_eq!(elf[6], 1, "EV_CURRENT");
        assert_eq!(&elf[7..16], &[0; 9], "System V ABI, padding");
        assert_eq!(u16_at(elf, 16), 2, "ET_EXEC");
        assert_eq!(u16_at(elf, 18), machine);
        assert_eq!(u32_at(elf, 20), 1);
        let entry = u64_at(elf, 24);
        let phoff = u64_at(elf, 32);
        assert_eq!(phoff, 64);
        assert_eq!(u64_at(elf, 40), 0, "no section headers");
        assert_eq!(u32_at(elf, 48), 0, "flags");
        assert_eq!(u16_at(elf, 52), 64, "ehsize");
        assert_eq!(u16_at(elf, 54), 56, "phentsize");
        assert_eq!(u16_at(elf, 56), 1, "phnum");
        assert_eq!(u16_at(elf, 60), 0, "shnum");
        let ph = usize::try_from(phoff).unwrap();
        assert_eq!(u32_at(elf, ph), 1, "PT_LOAD");
        assert_eq!(u32_at(elf, ph + 4), 5, "R+X");
        assert_eq!(u64_at(elf, ph + 8), 0, "offset");
        assert_eq!(u64_at(elf, ph + 16), base, "vaddr");
        let filesz = u64_at(elf, ph + 32);
        assert_eq!(
            filesz,
            u64::try_from(elf.len()).unwrap(),
            "maps the whole file"
        );
        assert_eq!(u64_at(elf, ph + 40), filesz, "memsz");
        assert_eq!(u64_at(elf, ph + 48), align);
        assert_eq!(base % align, 0, "segment starts on a page");
        // The entry point lands on the code, inside the segment.
        let code_at = usize::try_from(entry - base).unwrap();
        assert_eq!(code_at, 120);
        assert_eq!(&elf[code_at..], code);
        assert_eq!(code_at % 4, 0);
    }

    #[test]
    fn x86_64_elf_fields_parse_back() {
        let elf = pause_elf("x86_64").unwrap();
        check_elf64(&elf, 62, 0x40_0000, 0x1000, &X86_64_CODE);
        assert_eq!(elf.len(), 129);
        // jmp rel8 lands on the mov: end of jmp (9) - 9 = 0.
        let rel = i8::from_le_bytes([X86_64_CODE[8]]);
        assert_eq!(9 + i32::from(rel), 0);
        assert_eq!(u32_at(&X86_64_CODE, 1), 34, "__NR_pause on x86_64");
    }

    #[test]
    fn aarch64_elf_fields_and_encodings() {
        let elf = pause_elf("aarch64").unwrap();
        let code: Vec<u8> = AARCH64_CODE.iter().flat_map(|w| w.to_le_bytes()).collect();
        check_elf64(&elf, 183, 0x40_0000, 0x1_0000, &code);
        // MOVZ (64-bit, hw 0): 1 10 100101 00 imm16 Rd.
        let movz = |rd: u32, imm: u32| 0xd280_0000 | (imm << 5) | rd;
        for (i, rd) in (0..4).enumerate() {
            assert_eq!(AARCH64_CODE[i], movz(rd, 0));
        }
        assert_eq!(AARCH64_CODE[4], movz(8, 73), "__NR_ppoll on arm64");
        assert_eq!(
            AARCH64_CODE[5], 0xd400_0001,
            "svc #0: 11010100 000 imm16 000 01"
        );
        // B: 000101 imm26, target = pc + imm26 * 4 (sign-extended).
        let b = AARCH64_CODE[6];
        assert_eq!(b >> 26, 0b000101);
        let imm26 = i64::from(b & 0x03ff_ffff);
        let offset = (imm26 - if imm26 & (1 << 25) != 0 { 1 << 26 } else { 0 }) * 4;
        assert_eq!(6 * 4 + offset, 0, "branch returns to the first instruction");
    }

    #[test]
    fn arm_elf_fields_and_encodings() {
        let elf = pause_elf("arm").unwrap();
        assert_eq!(&elf[..7], b"\x7fELF\x01\x01\x01");
        assert_eq!(u16_at(&elf, 16), 2);
        assert_eq!(u16_at(&elf, 18), 40, "EM_ARM");
        let entry = u32_at(&elf, 24);
        assert_eq!(u32_at(&elf, 28), 52, "phoff");
        assert_eq!(u32_at(&elf, 36), 0x0500_0000, "EABI v5");
        assert_eq!(u16_at(&elf, 40), 52);
        assert_eq!(u16_at(&elf, 42), 32);
        assert_eq!(u16_at(&elf, 44), 1);
        assert_eq!(u16_at(&elf, 48), 0, "shnum");
        assert_eq!(u32_at(&elf, 52), 1, "PT_LOAD");
        assert_eq!(u32_at(&elf, 56), 0, "offset");
        assert_eq!(u32_at(&elf, 60), 0x1_0000, "vaddr");
        let len = u32::try_from(elf.len()).unwrap();
        assert_eq!(u32_at(&elf, 68), len, "filesz");
        assert_eq!(u32_at(&elf, 72), len, "memsz");
        assert_eq!(u32_at(&elf, 76), 5, "R+X");
        assert_eq!(entry, 0x1_0000 + 84);
        assert_eq!(entry % 4, 0, "ARM state, word aligned");
        assert_eq!(elf.len(), 84 + 12);
        // MOV (immediate): cond 1110, 00 1 1101 0, Rn 0, Rd 7, rot 0, imm8 29.
        assert_eq!(ARM_CODE[0], 0xe3a0_0000 | (7 << 12) | 29);
        assert_eq!(ARM_CODE[1] >> 24, 0xef, "svc, always");
        // B: cond 1110 101 0 imm24, target = pc + 8 + imm24 * 4.
        let b = ARM_CODE[2];
        assert_eq!(b >> 24, 0xea);
        let imm24 = i64::from(b & 0x00ff_ffff) - (1 << 24);
        assert_eq!(2 * 4 + 8 + imm24 * 4, 0, "branch returns to the mov");
    }

    #[test]
    fn unknown_arch_has_no_binary() {
        assert_eq!(pause_elf("riscv64"), None);
        assert_eq!(pause_elf(""), None);
    }

    #[test]
    fn image_ref_names_version_and_arch() {
        let r = pause_image_ref();
        assert!(r.starts_with("outpost/pause:1-"), "{r}");
        assert_eq!(pause_tag("arm64"), "1-arm64");
    }

    fn octal(field: &[u8]) -> u64 {
        let s: String = field
            .iter()
            .take_while(|b| **b != 0 && **b != b' ')
            .map(|b| char::from(*b))
            .collect();
        u64::from_str_radix(&s, 8).unwrap()
    }

    #[test]
    fn tar_header_and_checksum() {
        let content = pause_elf("x86_64").unwrap();
        let tar = single_file_tar("pause", 0o755, &content);
        assert_eq!(
            tar.len(),
            512 + 512 + 1024,
            "header, one data block, two end blocks"
        );
        let header: [u8; 512] = tar[..512].try_into().unwrap();
        assert_eq!(&header[..6], b"pause\0");
        assert_eq!(octal(&header[100..108]), 0o755);
        assert_eq!(
            octal(&header[124..136]),
            u64::try_from(content.len()).unwrap()
        );
        assert_eq!(header[156], b'0');
        assert_eq!(&header[257..265], b"ustar\x0000");
        // The stored checksum is what any tar reader recomputes.
        let stored = octal(&header[148..156]);
        assert_eq!(&header[154..156], b"\0 ");
        let recomputed: u64 = header
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        assert_eq!(stored, recomputed);
        assert_eq!(&tar[512..512 + content.len()], &content[..]);
        assert!(tar[512 + content.len()..].iter().all(|b| *b == 0));

        // Contents spanning blocks pad to the next block.
        assert_eq!(single_file_tar("f", 0o644, &[1; 512]).len(), 512 * 4);
        assert_eq!(single_file_tar("f", 0o644, &[1; 513]).len(), 512 * 5);
        assert_eq!(single_file_tar("f", 0o644, &[]).len(), 512 * 3);
    }

    #[test]
    fn tar_is_readable_by_system_tar() {
        // Cross-check with an independent reader when one is installed.
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        let elf = pause_elf("x86_64").unwrap();
        let archive = dir.path().join("rootfs.tar");
        std::fs::write(&archive, single_file_tar("pause", 0o755, &elf)).unwrap();
        let listing = match std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&archive)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                eprintln!("no tar here ({e}); skipping the cross-check");
                return;
            }
        };
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(
            listing.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&listing.stderr)
        );
        assert!(text.starts_with("-rwxr-xr-x root/root"), "{text}");
        assert!(text.trim_end().ends_with(" pause"), "{text}");
        assert!(text.contains(&format!(" {} ", elf.len())), "{text}");
    }
}
