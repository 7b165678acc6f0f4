//! Images and the architectures they run on.
//!
//! ARM and x86 boxes live side by side, and an image built for one does not
//! start on the other (`exec format error`). A pod that names
//! `kubernetes.io/arch` itself is placed by NodeAffinity like any label.
//! Otherwise the scheduler infers where its images can run:
//!
//! - from the copies nodes hold: an image reported by some node exists for
//!   the architectures of those copies ([`Images::archs`]); nodes of other
//!   architectures are filtered out. An image no node holds passes
//!   everywhere (the pull will tell).
//! - from failures: a pod that failed with `ExecFormatError` marks its
//!   image as not runnable on that node's architecture ([`Learned`]), so
//!   its replacement (the ReplicaSet controller replaces failed pods)
//!   avoids it. What is learned is kept in memory: after a controller
//!   restart the first failure teaches it again.
//!
//! The same index serves ImageLocality: which nodes hold an image, and how
//! big it is.

use outpost_proto::ImageSummary;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The reason the agent gives a pod whose binary is for another
/// architecture.
pub const EXEC_FORMAT_ERROR: &str = "ExecFormatError";

/// The canonical form of an image reference, so `nginx`, `nginx:latest`
/// and `docker.io/library/nginx:latest` are one image.
pub fn normalize(image: &str) -> String {
    let mut s = image.trim();
    for p in [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ] {
        if let Some(rest) = s.strip_prefix(p) {
            s = rest;
            break;
        }
    }
    let last = s.rsplit('/').next().unwrap_or(s);
    if s.contains('@') || last.contains(':') {
        s.to_string()
    } else {
        format!("{s}:latest")
    }
}

/// One image as the fleet holds it.
#[derive(Debug, Default, Clone)]
pub struct ImageEntry {
    pub size: u64,
    /// Nodes holding a copy.
    pub nodes: u32,
    /// Copies per architecture of the copy.
    pub archs: BTreeMap<String, u32>,
}

/// A node's copy of an image: (image id, size, architecture of the copy).
pub type NodeImage = (u32, u64, String);

/// Every image some node holds.
#[derive(Debug, Default)]
pub struct Images {
    ids: HashMap<String, u32>,
    entries: Vec<ImageEntry>,
}

impl Images {
    pub fn id(&self, image: &str) -> Option<u32> {
        self.ids.get(image).copied()
    }

    pub fn entry(&self, id: u32) -> &ImageEntry {
        &self.entries[id as usize]
    }

    fn intern(&mut self, name: String) -> u32 {
        if let Some(id) = self.ids.get(&name) {
            return *id;
        }
        let id = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.ids.insert(name, id);
        self.entries.push(ImageEntry::default());
        id
    }

    /// Adds a node's images; returns them as the node keeps them (sorted by
    /// id, one entry per image name).
    pub fn add_node(&mut self, images: &[ImageSummary], node_arch: &str) -> Vec<NodeImage> {
        let mut out: Vec<NodeImage> = Vec::new();
        for img in images {
            let arch = if img.architecture.is_empty() {
                node_arch
            } else {
                img.architecture.as_str()
            };
            for name in &img.names {
                let id = self.intern(normalize(name));
                if out.iter().any(|(i, _, _)| *i == id) {
                    continue;
                }
                out.push((id, img.size_bytes, arch.to_string()));
            }
        }
        out.sort_by_key(|(id, _, _)| *id);
        for (id, size, arch) in &out {
            let e = &mut self.entries[*id as usize];
            e.nodes += 1;
            e.size = e.size.max(*size);
            *e.archs.entry(arch.clone()).or_insert(0) += 1;
        }
        out
    }

    pub fn remove_node(&mut self, images: &[NodeImage]) {
        for (id, _, arch) in images {
            let e = &mut self.entries[*id as usize];
            e.nodes = e.nodes.saturating_sub(1);
            if let Some(n) = e.archs.get_mut(arch) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    e.archs.remove(arch);
                }
            }
        }
    }

    /// Architectures every one of `images` exists for, judging by the
    /// copies nodes hold; `None` when no node holds any of them.
    pub fn archs<'a>(&self, images: impl Iterator<Item = &'a str>) -> Option<BTreeSet<String>> {
        let mut allowed: Option<BTreeSet<String>> = None;
        for img in images {
            let Some(id) = self.id(img) else { continue };
            let e = self.entry(id);
            if e.nodes == 0 {
                continue;
            }
            let these: BTreeSet<String> = e.archs.keys().cloned().collect();
            allowed = Some(match allowed {
                None => these,
                Some(a) => a.intersection(&these).cloned().collect(),
            });
        }
        allowed
    }
}

/// Architectures images were seen failing on.
#[derive(Debug, Default)]
pub struct Learned {
    bad: HashMap<String, BTreeSet<String>>,
}

impl Learned {
    /// Records that `image` does not run on `arch`; whether it is news.
    pub fn mark(&mut self, image: &str, arch: &str) -> bool {
        self.bad
            .entry(image.to_string())
            .or_default()
            .insert(arch.to_string())
    }

    /// Architectures any of `images` is known not to run on.
    pub fn excluded<'a>(&self, images: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if self.bad.is_empty() {
            return out;
        }
        for img in images {
            if let Some(b) = self.bad.get(img) {
                out.extend(b.iter().cloned());
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.bad.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(names: &[&str], arch: &str, size: u64) -> ImageSummary {
        ImageSummary {
            names: names.iter().map(|s| s.to_string()).collect(),
            size_bytes: size,
            architecture: arch.into(),
            os: "linux".into(),
        }
    }

    #[test]
    fn names_normalise() {
        for (given, want) in [
            ("nginx", "nginx:latest"),
            ("nginx:1.25", "nginx:1.25"),
            ("docker.io/library/nginx:1.25", "nginx:1.25"),
            ("docker.io/acme/app", "acme/app:latest"),
            ("registry:5000/app", "registry:5000/app:latest"),
            ("registry:5000/app:v2", "registry:5000/app:v2"),
            ("app@sha256:abc", "app@sha256:abc"),
        ] {
            assert_eq!(normalize(given), want, "{given}");
        }
    }

    #[test]
    fn archs_come_from_the_copies_nodes_hold() {
        let mut images = Images::default();
        let a = images.add_node(&[img(&["web:1"], "arm64", 10)], "arm64");
        let cases: &[(&[&str], Option<&[&str]>)] = &[
            (&["web:1"], Some(&["arm64"])),
            (&["unknown:1"], None),
            (&["web:1", "unknown:1"], Some(&["arm64"])),
        ];
        for (imgs, want) in cases {
            let got = images.archs(imgs.iter().copied());
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
            assert_eq!(got, want, "{imgs:?}");
        }
        let b = images.add_node(&[img(&["web:1"], "", 10)], "amd64");
        assert_eq!(images.archs(["web:1"].into_iter()).unwrap().len(), 2);
        images.remove_node(&b);
        images.remove_node(&a);
        assert_eq!(images.archs(["web:1"].into_iter()), None);
    }

    #[test]
    fn learned_exclusions() {
        let mut l = Learned::default();
        assert!(l.mark("web:1", "amd64"));
        assert!(!l.mark("web:1", "amd64"));
        assert_eq!(l.excluded(["web:1", "db:1"].into_iter()).len(), 1);
        assert!(l.excluded(["db:1"].into_iter()).is_empty());
    }
}
