//! Byte sizes written as Kubernetes quantities (`128Mi`, `10M`, `1048576`).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid byte size {0:?}: expected an integer with an optional suffix Ki, Mi, Gi, Ti, k, M, G or T"
)]
pub struct ParseQuantityError(String);

/// The number of bytes a quantity stands for. Fractions and milli-units are refused: a size in
/// bytes is a whole number.
pub fn bytes(q: &Quantity) -> Result<u64, ParseQuantityError> {
    let s = q.0.trim();
    let err = || ParseQuantityError(q.0.clone());
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| err())?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let q = |s: &str| bytes(&Quantity(s.into()));
        assert_eq!(q("128Mi"), Ok(128 << 20));
        assert_eq!(q("10M"), Ok(10_000_000));
        assert_eq!(q("4096"), Ok(4096));
        assert_eq!(q("50Gi"), Ok(50 << 30));
        assert!(q("1.5Gi").is_err());
        assert!(q("100m").is_err());
        assert!(q("Mi").is_err());
        assert!(q("").is_err());
    }
}
