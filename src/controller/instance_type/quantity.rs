//! Kubernetes resource quantities as exact integers, to compare requests with allocatable.
//!
//! A quantity (`100m`, `2Gi`, `1.5`, `1e3`) is read as thousandths of its unit, rounded up, in
//! an `i128` — exact for every quantity the API server accepts and for the sums and quotients
//! instance fitting needs.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Thousandths of a unit (millicores for CPU, millibytes for memory).
pub type Milli = i128;

/// Parses a quantity into thousandths of its unit, or `None` when it is not one.
pub fn parse(q: &Quantity) -> Option<Milli> {
    parse_str(q.0.trim())
}

fn parse_str(s: &str) -> Option<Milli> {
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || whole.len() + fraction.len() > 30 {
        return None;
    }
    // The digits as an integer, and the power of ten they are scaled by.
    let digits: i128 = format!("{whole}{fraction}").parse().ok()?;
    let mut exp10: i32 = -(fraction.len() as i32);
    let mut binary: i128 = 1;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => binary = 1 << 10,
        "Mi" => binary = 1 << 20,
        "Gi" => binary = 1 << 30,
        "Ti" => binary = 1 << 40,
        "Pi" => binary = 1 << 50,
        "Ei" => binary = 1 << 60,
        _ => {
            let rest = suffix.strip_prefix(['e', 'E'])?;
            exp10 += rest.parse::<i32>().ok()?;
        }
    }
    // To thousandths.
    exp10 += 3;
    let scaled = digits.checked_mul(binary)?;
    let value = if exp10 >= 0 {
        scaled.checked_mul(10i128.checked_pow(exp10 as u32)?)?
    } else {
        let divisor = 10i128.checked_pow((-exp10) as u32)?;
        // Round up: a request of 0.0001 CPU still needs one millicore.
        (scaled + divisor - 1) / divisor
    };
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Option<Milli> {
        parse(&Quantity(s.to_owned()))
    }

    #[test]
    fn decimal_binary_and_exponent_forms() {
        assert_eq!(q("100m"), Some(100));
        assert_eq!(q("2"), Some(2000));
        assert_eq!(q("1.5"), Some(1500));
        assert_eq!(q("0.1"), Some(100));
        assert_eq!(q("2Gi"), Some(2 * (1 << 30) * 1000));
        assert_eq!(q("128Mi"), Some(128 * (1 << 20) * 1000));
        assert_eq!(q("1k"), Some(1_000_000));
        assert_eq!(q("1e3"), Some(1_000_000));
        assert_eq!(q("64G"), Some(64_000_000_000_000));
        assert_eq!(q("110"), Some(110_000));
        assert_eq!(q("-1"), Some(-1000));
        assert_eq!(q(".5"), Some(500));
    }

    #[test]
    fn tiny_values_round_up_and_garbage_is_rejected() {
        assert_eq!(q("1u"), Some(1));
        assert_eq!(q("500n"), Some(1));
        assert_eq!(q("0.0001"), Some(1));
        assert_eq!(q(""), None);
        assert_eq!(q("abc"), None);
        assert_eq!(q("1Xi"), None);
        assert_eq!(q("."), None);
    }
}
