//! COCO caption files: annotations (`{"images": [...], "annotations": [...]}`) and results
//! (`[{"image_id", "caption"}]`), parsed from strings so that wasm32 can use them too.
//!
//! Parsing goes through `serde_json::Value` rather than derived structs so that every problem is
//! reported with the file, the entry index and the field, e.g.
//! `val.json: annotations[3]: "caption" must be a string`.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// A COCO image id: an integer, or a string in data sets that use file stems as ids. As in Python,
/// `1` and `"1"` are different images.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageId {
    Int(i64),
    Str(String),
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageId::Int(i) => write!(f, "{i}"),
            ImageId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for ImageId {
    fn from(id: i64) -> Self {
        ImageId::Int(id)
    }
}

impl From<&str> for ImageId {
    fn from(id: &str) -> Self {
        ImageId::Str(id.to_string())
    }
}

/// One entry of `"images"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub id: ImageId,
    /// `"file_name"`, when the file gives one.
    pub file_name: Option<String>,
}

/// One caption: a reference (`"annotations"`) or a generated result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoCaption {
    pub image_id: ImageId,
    pub caption: String,
}

/// A parsed COCO annotations file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Annotations {
    /// `"images"` in file order (empty when the file has none).
    pub images: Vec<ImageInfo>,
    /// `"annotations"` in file order.
    pub captions: Vec<CocoCaption>,
}

impl Annotations {
    /// Reference captions per image, in file order.
    pub fn references(&self) -> HashMap<&ImageId, Vec<&str>> {
        let mut refs: HashMap<&ImageId, Vec<&str>> = HashMap::new();
        for c in &self.captions {
            refs.entry(&c.image_id).or_default().push(&c.caption);
        }
        refs
    }

    /// Image ids in evaluation order: the order of `"images"` (which is the order `pycocotools`
    /// uses), then images that only appear in `"annotations"`, by first appearance.
    pub fn image_order(&self) -> Vec<&ImageId> {
        let mut seen = std::collections::HashSet::new();
        let listed = self.images.iter().map(|i| &i.id);
        let annotated = self.captions.iter().map(|c| &c.image_id);
        listed
            .chain(annotated)
            .filter(|id| seen.insert(*id))
            .collect()
    }
}

/// Parses a COCO annotations file. `file` names it in errors.
pub fn parse_annotations(json: &str, file: &str) -> Result<Annotations> {
    let value = parse_json(json, file)?;
    let Some(object) = value.as_object() else {
        let hint = if value.is_array() {
            " (this looks like a results file)"
        } else {
            ""
        };
        return Err(Error::metrics(
            file,
            format!("expected a COCO annotations object with \"images\" and \"annotations\"{hint}"),
        ));
    };
    let Some(list) = object.get("annotations") else {
        return Err(Error::metrics(
            file,
            "missing \"annotations\": not a COCO captions annotations file",
        ));
    };
    let captions = captions(list, file, "annotations")?;
    let images = match object.get("images") {
        None => Vec::new(),
        Some(images) => image_infos(images, file)?,
    };
    Ok(Annotations { images, captions })
}

/// Parses a COCO results file (`[{"image_id", "caption"}]`; other fields are ignored).
pub fn parse_results(json: &str, file: &str) -> Result<Vec<CocoCaption>> {
    let value = parse_json(json, file)?;
    if value.get("annotations").is_some() {
        return Err(Error::metrics(
            file,
            "expected a results list [{\"image_id\", \"caption\"}], found an annotations file",
        ));
    }
    captions(&value, file, "results")
}

fn parse_json(json: &str, file: &str) -> Result<Value> {
    serde_json::from_str(json).map_err(|e| Error::metrics(file, format!("not valid JSON: {e}")))
}

fn captions(list: &Value, file: &str, what: &str) -> Result<Vec<CocoCaption>> {
    let Some(items) = list.as_array() else {
        return Err(Error::metrics(
            file,
            format!("\"{what}\" must be a list of {{\"image_id\", \"caption\"}}"),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{what}[{i}]");
            let image_id = image_id(field(item, "image_id", file, &at)?, file, &at)?;
            let caption = match field(item, "caption", file, &at)? {
                Value::String(s) => s.clone(),
                _ => {
                    return Err(Error::metrics(
                        file,
                        format!("{at}: \"caption\" must be a string"),
                    ))
                }
            };
            Ok(CocoCaption { image_id, caption })
        })
        .collect()
}

fn image_infos(list: &Value, file: &str) -> Result<Vec<ImageInfo>> {
    let Some(items) = list.as_array() else {
        return Err(Error::metrics(
            file,
            "\"images\" must be a list of {\"id\", \"file_name\"}",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("images[{i}]");
            let id = image_id(field(item, "id", file, &at)?, file, &at)?;
            let file_name = match item.get("file_name") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(Error::metrics(
                        file,
                        format!("{at}: \"file_name\" must be a string"),
                    ))
                }
            };
            Ok(ImageInfo { id, file_name })
        })
        .collect()
}

fn field<'a>(item: &'a Value, name: &str, file: &str, at: &str) -> Result<&'a Value> {
    if !item.is_object() {
        return Err(Error::metrics(file, format!("{at}: expected an object")));
    }
    item.get(name)
        .ok_or_else(|| Error::metrics(file, format!("{at}: missing \"{name}\"")))
}

/// An id is an integer (an integral float such as `1.0` counts, as it does for Python's dicts) or a string.
fn image_id(value: &Value, file: &str, at: &str) -> Result<ImageId> {
    match value {
        Value::String(s) => Ok(ImageId::Str(s.clone())),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(ImageId::Int(i));
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(ImageId::Int(f as i64)),
                _ => Err(Error::metrics(
                    file,
                    format!("{at}: image id {n} is not an integer"),
                )),
            }
        }
        _ => Err(Error::metrics(
            file,
            format!("{at}: image id must be an integer or a string"),
        )),
    }
}
