//! JSON: compact request bodies (members left out when their whole-placeholder value is
//! absent), and JSON answers.
use std::sync::Arc;

use serde_json::Value;

use super::{AnswerReader, BodyWriter, FormatKind};
use crate::engine::projection::{Projected, Projection};
use crate::engine::template::{JsonTemplate, RenderError, Values};

pub struct Json;

const NOT_JSON: &str = "answer is not JSON";

impl FormatKind for Json {
    fn name(&self) -> &'static str {
        "json"
    }
    fn summary(&self) -> &'static str {
        "compact JSON, members in file order (the default)"
    }
    fn writer(&self, _: &Value, _: &JsonTemplate) -> Option<Result<Arc<dyn BodyWriter>, String>> {
        Some(Ok(Arc::new(Run)))
    }
    fn reader(&self) -> Option<Arc<dyn AnswerReader>> {
        Some(Arc::new(Run))
    }
}

#[derive(Debug)]
struct Run;

impl BodyWriter for Run {
    fn content_type(&self) -> &'static str {
        "application/json"
    }
    fn write(
        &self,
        body: &JsonTemplate,
        values: &dyn Values,
        out: &mut Vec<u8>,
    ) -> Result<(), RenderError> {
        body.render(values, out)
    }
}

impl AnswerReader for Run {
    fn accept(&self) -> &'static str {
        "application/json"
    }
    fn read(&self, body: &[u8]) -> Result<Value, String> {
        crate::engine::projection::read_whole(body).map_err(|_| NOT_JSON.to_owned())
    }
    fn read_projected(&self, body: &[u8], projection: &Projection) -> Result<Projected, String> {
        projection.read_items(body).map_err(|_| NOT_JSON.to_owned())
    }
}
