//! Money parsing, printing and arithmetic, attacked with the inputs a config typo or a
//! hostile price file would produce.

use ironcage_guard::money::{MoneyError, Usd, PICOS_PER_USD};

fn p(s: &str) -> Usd {
    Usd::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn parses_exact_decimals() {
    assert_eq!(p("1.00").picos(), PICOS_PER_USD);
    assert_eq!(p("1").picos(), PICOS_PER_USD);
    assert_eq!(p("0.000001").picos(), 1_000_000);
    assert_eq!(p("$2.5").picos(), 2_500_000_000_000);
    assert_eq!(p(".5").picos(), 500_000_000_000);
    assert_eq!(p("  3.25 ").picos(), 3_250_000_000_000);
    assert_eq!(p("0.000000000001").picos(), 1);
    assert_eq!(p("0").picos(), 0);
    assert_eq!(p("007.10").picos(), 7_100_000_000_000);
    // Trailing zeros beyond 12 places carry no value and are accepted.
    assert_eq!(p("1.50000000000000000").picos(), 1_500_000_000_000);
    // The largest amount there is.
    assert_eq!(p("9223372.036854775807"), Usd::MAX);
}

#[test]
fn decimal_arithmetic_is_exact_where_floats_are_not() {
    assert_eq!(p("0.1").checked_add(p("0.2")), Some(p("0.3")));
    let ten_cents: Usd = std::iter::repeat_n(p("0.01"), 10).sum();
    assert_eq!(ten_cents, p("0.10"));
}

#[test]
fn refuses_negatives_garbage_precision_and_overflow() {
    for s in ["-1", "-0.5", "$-1", " -0"] {
        assert!(
            matches!(Usd::parse(s), Err(MoneyError::Negative { .. })),
            "{s}"
        );
    }
    for s in [
        "1.2.3", "1,000", "1e3", "abc", "$", "1.", ".", "+1", "1 000", "0x10", "1_000", "NaN",
        "inf", "١", "1.5$", "$$1", "--1",
    ] {
        assert!(
            matches!(
                Usd::parse(s),
                Err(MoneyError::Invalid { .. } | MoneyError::Negative { .. })
            ),
            "{s:?} -> {:?}",
            Usd::parse(s)
        );
    }
    assert_eq!(Usd::parse(""), Err(MoneyError::Empty));
    assert_eq!(Usd::parse("   "), Err(MoneyError::Empty));
    assert!(matches!(
        Usd::parse("0.0000000000001"),
        Err(MoneyError::TooPrecise { .. })
    ));
    for s in ["9223372.036854775808", "9223373", &"9".repeat(40)] {
        assert!(
            matches!(Usd::parse(s), Err(MoneyError::Overflow { .. })),
            "{s}"
        );
    }
}

#[test]
fn errors_quote_the_text_but_never_a_megabyte_of_it() {
    let huge = "x".repeat(1 << 20);
    let e = Usd::parse(&huge).unwrap_err().to_string();
    assert!(e.len() < 300, "{}", e.len());
    let e = Usd::parse("1.2.3").unwrap_err().to_string();
    assert!(e.contains("`1.2.3`"), "{e}");
}

#[test]
fn signed_parse_round_trips_every_value_through_the_exact_form() {
    for v in [
        0,
        1,
        -1,
        999_999,
        1_000_000,
        PICOS_PER_USD,
        -PICOS_PER_USD / 3,
        i64::MAX,
        i64::MIN + 1,
    ] {
        let u = Usd::from_picos(v);
        assert_eq!(Usd::parse_signed(&u.to_decimal_string()), Ok(u), "{v}");
    }
    assert_eq!(Usd::parse_signed("-0.3").unwrap().picos(), -300_000_000_000);
}

#[test]
fn exact_string_has_no_trailing_zeros() {
    assert_eq!(p("1.00").to_decimal_string(), "1");
    assert_eq!(p("0.000001").to_decimal_string(), "0.000001");
    assert_eq!(p("2.50").to_decimal_string(), "2.5");
    assert_eq!(Usd::from_picos(1).to_decimal_string(), "0.000000000001");
    assert_eq!(
        Usd::from_picos(-2_500_000_000_000).to_decimal_string(),
        "-2.5"
    );
    assert_eq!(Usd::MIN.to_decimal_string(), "-9223372.036854775808");
}

#[test]
fn display_rounds_half_up_to_six_decimals() {
    assert_eq!(p("1").to_string(), "$1.000000");
    assert_eq!(p("0.99").to_string(), "$0.990000");
    assert_eq!(p("0.0000005").to_string(), "$0.000001");
    assert_eq!(p("0.000000499999").to_string(), "$0.000000");
    assert_eq!(p("0.9999995").to_string(), "$1.000000");
    assert_eq!(Usd::from_picos(-500_000).to_string(), "-$0.000001");
    assert_eq!(Usd::from_picos(-499_999).to_string(), "$0.000000");
    assert_eq!(Usd::MAX.to_string(), "$9223372.036855");
    assert_eq!(Usd::MIN.to_string(), "-$9223372.036855");
    // Display never changes the value.
    assert_eq!(p("0.0000005").picos(), 500_000);
}

#[test]
fn arithmetic_saturates_or_reports_overflow() {
    assert_eq!(Usd::MAX.checked_add(Usd::from_picos(1)), None);
    assert_eq!(Usd::MAX.saturating_add(Usd::from_picos(1)), Usd::MAX);
    assert_eq!(Usd::MIN.saturating_sub(Usd::from_picos(1)), Usd::MIN);
    assert_eq!(
        p("1").checked_sub(p("1.5")),
        Some(Usd::from_picos(-PICOS_PER_USD / 2))
    );
    assert_eq!(p("0.5").checked_mul(3), Some(p("1.5")));
    assert_eq!(p("1").checked_mul(u64::MAX), None);
    assert_eq!(p("1").saturating_mul(u64::MAX), Usd::MAX);
    assert_eq!(Usd::from_picos(-1).saturating_mul(u64::MAX), Usd::MIN);
    assert_eq!(Usd::ZERO.checked_mul(u64::MAX), Some(Usd::ZERO));
    let total: Usd = [Usd::MAX, Usd::MAX].into_iter().sum();
    assert_eq!(total, Usd::MAX);
}

#[test]
fn per_million_token_costs_are_exact_and_round_up() {
    // $2.50 per 1M tokens: one token is 2.5 micro-dollars exactly.
    assert_eq!(p("2.50").checked_per_million(1), Some(p("0.0000025")));
    assert_eq!(p("2.50").checked_per_million(1_000_000), Some(p("2.50")));
    // $0.000001 per 1M: one token costs a millionth of a picodollar, billed as one.
    assert_eq!(
        p("0.000001").checked_per_million(1),
        Some(Usd::from_picos(1))
    );
    assert_eq!(p("0").checked_per_million(u64::MAX), Some(Usd::ZERO));
    // u64::MAX tokens at $15/1M overflows i64 picodollars: reported, never wrapped.
    assert_eq!(p("15").checked_per_million(u64::MAX), None);
    assert_eq!(p("15").saturating_per_million(u64::MAX), Usd::MAX);
    assert_eq!(Usd::from_picos(-1).checked_per_million(5), None);
    assert_eq!(Usd::from_picos(-1).saturating_per_million(5), Usd::ZERO);
}

#[test]
fn serde_writes_exact_strings_and_refuses_floats() {
    let v = serde_json::to_string(&p("0.000001")).unwrap();
    assert_eq!(v, "\"0.000001\"");
    let back: Usd = serde_json::from_str(&v).unwrap();
    assert_eq!(back, p("0.000001"));
    let e = serde_json::from_str::<Usd>("0.1").unwrap_err().to_string();
    assert!(e.contains("quoted decimal string"), "{e}");
    assert!(serde_json::from_str::<Usd>("\"-1\"").is_err());
    assert!(serde_json::from_str::<Usd>("\"1e3\"").is_err());
    // YAML hands the scalar over as written, so an unquoted decimal stays exact.
    let y: Usd = serde_norway::from_str("0.1").unwrap();
    assert_eq!(y, p("0.1"));
    let y: Usd = serde_norway::from_str("\"$3.75\"").unwrap();
    assert_eq!(y, p("3.75"));
    assert!(serde_norway::from_str::<Usd>("1e3").is_err());
    assert!(serde_norway::from_str::<Usd>(".inf").is_err());
}

#[test]
fn constructors() {
    assert_eq!(Usd::from_dollars(2), Some(p("2")));
    assert_eq!(Usd::from_dollars(i64::MAX), None);
    assert_eq!(Usd::from_micros(1), Some(p("0.000001")));
    assert!(Usd::from_picos(-1).is_negative());
    assert_eq!("4.2".parse::<Usd>(), Ok(p("4.2")));
    assert_eq!(format!("{:?}", p("4.2")), "Usd(4.2)");
}
