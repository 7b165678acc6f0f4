//! TEMPORARY shim until admission lands (same API): passes objects through.

use super::validate::Problem;
use crate::api::Object;
use crate::cache::Cache;

#[derive(Debug, Clone, Default)]
pub struct AdmissionConfig {}

#[derive(Debug, Clone)]
pub struct Admitted {
    pub object: Object,
    pub warnings: Vec<String>,
}

pub fn admit(
    obj: Object,
    _old: Option<&Object>,
    _cache: &Cache,
    _cfg: &AdmissionConfig,
) -> Result<Admitted, Vec<Problem>> {
    Ok(Admitted {
        object: obj,
        warnings: Vec::new(),
    })
}
