//! The images this node's engine holds, as the node report lists them: the
//! scheduler scores nodes that already have a pod's image (pulls over weak
//! links are expensive) and learns from them which architectures an image
//! exists for.
//!
//! Data flow: every housekeeping cycle [`ImageCatalog::refresh`] lists the
//! engine's images (one call) and inspects only the images it has not seen
//! before, for the architecture and OS in their config, which never change
//! for an image id; in steady state a cycle costs the one list call.
//! [`listed`] (pure) decides what goes on the wire: named images only, the
//! most recently created first, within the bounds of `outpost_proto`
//! ([`MAX_IMAGES`], [`MAX_IMAGE_NAMES`], [`MAX_IMAGE_NAME`],
//! [`MAX_IMAGE_NAME_BYTES`]), so a measured report always validates.

use super::docker::{Engine, EngineError, Image, Platform};
use outpost_proto::{
    ImageSummary, MAX_IMAGES, MAX_IMAGE_NAME, MAX_IMAGE_NAMES, MAX_IMAGE_NAME_BYTES,
    MAX_PLATFORM_NAME,
};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;

/// Where images come from: the engine, or a test's fake.
pub trait ImageSource {
    fn list_images(&self) -> impl Future<Output = Result<Vec<Image>, EngineError>> + Send;
    fn image_platform(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Platform, EngineError>> + Send;
}

impl ImageSource for Engine {
    async fn list_images(&self) -> Result<Vec<Image>, EngineError> {
        Engine::list_images(self).await
    }

    async fn image_platform(&self, id: &str) -> Result<Platform, EngineError> {
        Engine::image_platform(self, id).await
    }
}

/// The names an image is listed under: repo tags, then repo digests,
/// without duplicates, empty names or names longer than
/// [`MAX_IMAGE_NAME`] (a cut name would be a wrong name), at most
/// [`MAX_IMAGE_NAMES`].
pub fn image_names(image: &Image) -> Vec<String> {
    let mut seen = BTreeSet::new();
    image
        .tags
        .iter()
        .chain(&image.digests)
        .filter(|n| !n.is_empty() && n.len() <= MAX_IMAGE_NAME)
        .filter(|n| seen.insert(n.as_str()))
        .take(MAX_IMAGE_NAMES)
        .cloned()
        .collect()
}

/// The images a report lists, with their names, in order: the most
/// recently created first (ties by id, so the order is stable), images
/// without a usable name left out (nobody can ask for them by name), at
/// most [`MAX_IMAGES`], and no more than [`MAX_IMAGE_NAME_BYTES`] of names
/// in all (the oldest images give way).
pub fn listed(images: &[Image]) -> Vec<(&Image, Vec<String>)> {
    let mut order: Vec<&Image> = images.iter().collect();
    order.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for image in order {
        if out.len() == MAX_IMAGES {
            break;
        }
        let names = image_names(image);
        if names.is_empty() {
            continue;
        }
        let len: usize = names.iter().map(String::len).sum();
        if bytes + len > MAX_IMAGE_NAME_BYTES {
            break;
        }
        bytes += len;
        out.push((image, names));
    }
    out
}

/// `s` if it fits the wire's bound, else empty ("the engine did not say").
fn platform_name(s: &str) -> String {
    if s.len() <= MAX_PLATFORM_NAME {
        s.to_string()
    } else {
        String::new()
    }
}

/// The report's image list from an engine listing and the platforms known
/// so far (by image id; unknown ones go out with empty architecture and
/// OS).
pub fn summarize(images: &[Image], platforms: &HashMap<String, Platform>) -> Vec<ImageSummary> {
    listed(images)
        .into_iter()
        .map(|(image, names)| {
            let p = platforms.get(&image.id);
            ImageSummary {
                names,
                size_bytes: image.size_bytes,
                architecture: p
                    .map(|p| platform_name(&p.architecture))
                    .unwrap_or_default(),
                os: p.map(|p| platform_name(&p.os)).unwrap_or_default(),
            }
        })
        .collect()
}

/// The node's image list, kept between housekeeping cycles.
#[derive(Debug, Default)]
pub struct ImageCatalog {
    /// Platform by image id, for the listed images only (so at most
    /// [`MAX_IMAGES`] entries).
    platforms: HashMap<String, Platform>,
    current: Vec<ImageSummary>,
}

impl ImageCatalog {
    /// The list as of the last successful refresh.
    pub fn current(&self) -> &[ImageSummary] {
        &self.current
    }

    /// Lists the engine's images and inspects the ones not seen before.
    /// An image that cannot be inspected (removed meanwhile, engine
    /// trouble) is listed without a platform and inspected again next
    /// time. On a failed listing the previous list stays: the images are
    /// still on the box while the engine is away.
    pub async fn refresh(&mut self, source: &impl ImageSource) -> Result<(), EngineError> {
        let images = source.list_images().await?;
        let wanted: Vec<&Image> = listed(&images).into_iter().map(|(i, _)| i).collect();
        let ids: BTreeSet<&str> = wanted.iter().map(|i| i.id.as_str()).collect();
        self.platforms.retain(|id, _| ids.contains(id.as_str()));
        for image in wanted {
            if self.platforms.contains_key(&image.id) {
                continue;
            }
            match source.image_platform(&image.id).await {
                Ok(p) => {
                    self.platforms.insert(image.id.clone(), p);
                }
                Err(e) if e.is_unavailable() => return Err(e),
                Err(e) => tracing::debug!(image = %image.id, "cannot inspect image: {e}"),
            }
        }
        self.current = summarize(&images, &self.platforms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn image(id: &str, created: i64, tags: &[&str], digests: &[&str]) -> Image {
        Image {
            id: id.into(),
            tags: tags.iter().map(|t| (*t).to_string()).collect(),
            digests: digests.iter().map(|d| (*d).to_string()).collect(),
            size_bytes: 1000,
            created,
            containers: 0,
        }
    }

    fn names(list: &[ImageSummary]) -> Vec<String> {
        list.iter().map(|i| i.names.join(",")).collect()
    }

    #[test]
    fn newest_first_named_only_within_bounds() {
        let long = format!("r/{}:1", "x".repeat(MAX_IMAGE_NAME));
        let many: Vec<String> = (0..12).map(|i| format!("m:{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let images = vec![
            image("old", 10, &["old:1"], &["old@sha256:aa"]),
            image("new", 30, &["new:1", "new:latest"], &[]),
            image("dangling", 40, &[], &[]),
            image("too-long", 20, &[long.as_str()], &["t@sha256:bb"]),
            image("only-long", 25, &[long.as_str()], &[]),
            image("many", 5, &many, &[]),
            image("dup", 1, &["d:1", "d:1"], &["d@sha256:cc"]),
        ];
        let mut platforms = HashMap::new();
        platforms.insert(
            "new".to_string(),
            Platform {
                architecture: "arm64".into(),
                os: "linux".into(),
            },
        );
        platforms.insert(
            "old".to_string(),
            Platform {
                architecture: "a".repeat(MAX_PLATFORM_NAME + 1),
                os: "linux".into(),
            },
        );
        let list = summarize(&images, &platforms);
        assert_eq!(
            names(&list),
            [
                "new:1,new:latest",
                "t@sha256:bb",
                "old:1,old@sha256:aa",
                "m:0,m:1,m:2,m:3,m:4,m:5,m:6,m:7",
                "d:1,d@sha256:cc",
            ]
        );
        assert_eq!(
            (list[0].architecture.as_str(), list[0].os.as_str()),
            ("arm64", "linux")
        );
        assert_eq!(list[1].architecture, "", "not inspected yet");
        assert_eq!(list[2].architecture, "", "an absurd name is not sent");
        assert_eq!(list[0].size_bytes, 1000);
        let report = outpost_proto::NodeReport {
            images: list,
            ..Default::default()
        };
        assert!(report.validate().is_ok(), "{:?}", report.validate());
    }

    #[test]
    fn the_most_recent_images_fill_the_report() {
        let many: Vec<Image> = (0..300)
            .map(|i| image(&format!("id{i:03}"), i, &[&format!("img:{i}")], &[]))
            .collect();
        let list = summarize(&many, &HashMap::new());
        assert_eq!(list.len(), MAX_IMAGES);
        assert_eq!(list[0].names, ["img:299"]);
        assert_eq!(list[MAX_IMAGES - 1].names, ["img:44"]);

        // Long names: the byte budget stops the list before the count does.
        let name = |i: i64| format!("{i:04}{}", "n".repeat(MAX_IMAGE_NAME - 4));
        let big: Vec<Image> = (0..300)
            .map(|i| {
                let (a, b, c) = (name(i), name(i + 1000), name(i + 2000));
                image(&format!("id{i:03}"), i, &[&a, &b, &c], &[])
            })
            .collect();
        let list = summarize(&big, &HashMap::new());
        let bytes: usize = list.iter().flat_map(|i| &i.names).map(String::len).sum();
        assert!(bytes <= MAX_IMAGE_NAME_BYTES);
        assert_eq!(list.len(), MAX_IMAGE_NAME_BYTES / (3 * MAX_IMAGE_NAME));
        assert!(list.len() < MAX_IMAGES);
        assert!(list[0].names[0].starts_with("0299"));
    }

    /// A fake engine that counts calls.
    #[derive(Default)]
    struct Fake {
        images: Mutex<Vec<Image>>,
        lists: Mutex<u32>,
        inspected: Mutex<Vec<String>>,
    }

    impl ImageSource for Fake {
        async fn list_images(&self) -> Result<Vec<Image>, EngineError> {
            *self.lists.lock().unwrap() += 1;
            Ok(self.images.lock().unwrap().clone())
        }

        async fn image_platform(&self, id: &str) -> Result<Platform, EngineError> {
            self.inspected.lock().unwrap().push(id.to_string());
            if id == "gone" {
                return Err(EngineError::NotFound(format!("no such image: {id}")));
            }
            Ok(Platform {
                architecture: "arm64".into(),
                os: "linux".into(),
            })
        }
    }

    #[tokio::test]
    async fn platforms_are_inspected_once_per_image() {
        let fake = Fake::default();
        *fake.images.lock().unwrap() = vec![
            image("a", 1, &["a:1"], &[]),
            image("b", 2, &["b:1"], &[]),
            image("gone", 3, &["gone:1"], &[]),
            image("dangling", 4, &[], &[]),
        ];
        let mut catalog = ImageCatalog::default();
        catalog.refresh(&fake).await.unwrap();
        assert_eq!(*fake.inspected.lock().unwrap(), ["gone", "b", "a"]);
        assert_eq!(names(catalog.current()), ["gone:1", "b:1", "a:1"]);
        assert_eq!(catalog.current()[0].architecture, "");
        assert_eq!(catalog.current()[1].architecture, "arm64");

        // Steady state: one list, and only the image that failed again.
        fake.inspected.lock().unwrap().clear();
        fake.images.lock().unwrap().retain(|i| i.id != "gone");
        catalog.refresh(&fake).await.unwrap();
        assert_eq!(*fake.lists.lock().unwrap(), 2);
        assert!(fake.inspected.lock().unwrap().is_empty());
        assert_eq!(names(catalog.current()), ["b:1", "a:1"]);

        // A new image is inspected; a removed one is forgotten.
        fake.images
            .lock()
            .unwrap()
            .push(image("c", 5, &["c:1"], &[]));
        fake.images.lock().unwrap().retain(|i| i.id != "a");
        catalog.refresh(&fake).await.unwrap();
        assert_eq!(*fake.inspected.lock().unwrap(), ["c"]);
        assert_eq!(names(catalog.current()), ["c:1", "b:1"]);
        assert_eq!(catalog.platforms.len(), 2);
    }
}
