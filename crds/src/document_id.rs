//! The OpenSearch document `_id` template, e.g. `{order_id}:{item_id}`: parsed and checked by the
//! operator, rendered by the runtime. A deterministic id is what makes replays overwrite instead of
//! duplicating.

/// Fields of a sale line a template may use (the sale's scalar keys).
pub const SALE_FIELDS: &[&str] = &[
    "order_id",
    "item_id",
    "quantity",
    "bill_customer_id",
    "ship_customer_id",
    "warehouse_id",
    "promo_id",
    "ship_mode",
    "ship_carrier",
    "sale_datetime",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Field(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentIdTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unclosed '{{' in document id template {0:?}")]
    Unclosed(String),
    #[error("unknown field {field:?} in document id template; known fields: {known}")]
    UnknownField { field: String, known: String },
    #[error("document id template {0:?} uses no field, so every document would get the same id")]
    NoField(String),
    #[error("'}}' without '{{' in document id template {0:?}")]
    StrayClose(String),
}

impl DocumentIdTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    break;
                }
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(TemplateError::StrayClose(template.to_string()));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_string()));
                    }
                    let after = &rest[i + 1..];
                    let close = after
                        .find('}')
                        .ok_or_else(|| TemplateError::Unclosed(template.to_string()))?;
                    let name = &after[..close];
                    let field = SALE_FIELDS.iter().find(|f| **f == name).ok_or_else(|| {
                        TemplateError::UnknownField {
                            field: name.to_string(),
                            known: SALE_FIELDS.join(", "),
                        }
                    })?;
                    parts.push(Part::Field(field));
                    rest = &after[close + 1..];
                }
            }
        }
        if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
            return Err(TemplateError::NoField(template.to_string()));
        }
        Ok(Self { parts })
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Render with a lookup of field values (the runtime passes the sale's fields).
    pub fn render<'a>(
        &self,
        mut value: impl FnMut(&str) -> Option<std::borrow::Cow<'a, str>>,
    ) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Field(f) => {
                    if let Some(v) = value(f) {
                        out.push_str(&v);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_renders() {
        let t = DocumentIdTemplate::parse("{order_id}:{item_id}").unwrap();
        let id = t.render(|f| match f {
            "order_id" => Some("42".into()),
            "item_id" => Some("7".into()),
            _ => None,
        });
        assert_eq!(id, "42:7");
    }

    #[test]
    fn errors_are_readable() {
        assert!(matches!(
            DocumentIdTemplate::parse("{order_id}:{sku}"),
            Err(TemplateError::UnknownField { field, .. }) if field == "sku"
        ));
        assert!(matches!(
            DocumentIdTemplate::parse("{order_id"),
            Err(TemplateError::Unclosed(_))
        ));
        assert!(matches!(
            DocumentIdTemplate::parse("fixed"),
            Err(TemplateError::NoField(_))
        ));
        assert!(matches!(
            DocumentIdTemplate::parse("a}b{order_id}"),
            Err(TemplateError::StrayClose(_))
        ));
    }
}
