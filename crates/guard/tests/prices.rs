//! The shipped price table, lookups of dated model ids, user overrides and their error
//! messages, and the cost of usage under both providers' cache semantics.

use ironcage_guard::money::Usd;
use ironcage_guard::prices::{Price, PriceError, PriceTable, Usage, SHIPPED_YAML};
use std::io::Write as _;

fn usd(s: &str) -> Usd {
    Usd::parse(s).unwrap()
}

fn shipped() -> &'static PriceTable {
    PriceTable::shipped()
}

fn price(model: &str) -> &'static Price {
    shipped()
        .lookup(model)
        .unwrap_or_else(|| panic!("no price for {model}"))
}

/// Writes `text` to a temporary price file and loads it over the shipped table.
fn load(text: &str) -> (Result<PriceTable, PriceError>, tempfile::NamedTempFile) {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    (PriceTable::load(f.path()), f)
}

fn load_err(text: &str) -> (String, String) {
    let (r, f) = load(text);
    let e = r.expect_err("expected an error").to_string();
    (e, f.path().display().to_string())
}

#[test]
fn shipped_table_parses_and_has_a_date() {
    let t = PriceTable::parse(SHIPPED_YAML, "shipped").unwrap();
    assert_eq!(&t, shipped());
    assert!(
        t.updated().is_some_and(|d| d.len() == 10),
        "{:?}",
        t.updated()
    );
    assert!(t.models().count() > 25);
    assert!(
        t.fallback().is_none(),
        "unknown models are refused unless a fallback is configured"
    );
}

#[test]
fn shipped_table_covers_the_main_models_with_sane_prices() {
    for m in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "claude-opus-4-1",
        "claude-opus-4",
        "claude-sonnet-4-5",
        "claude-sonnet-4",
        "claude-haiku-4-5",
        "claude-3-7-sonnet",
        "claude-3-5-sonnet",
        "claude-3-5-haiku",
        "claude-3-haiku",
        "claude-3-opus",
    ] {
        let p = price(m);
        assert!(p.input > Usd::ZERO, "{m}");
        assert!(
            p.input <= usd("20"),
            "{m}: input over $20/1M looks like a typo"
        );
        if m.starts_with("text-embedding") {
            assert_eq!(p.output, Usd::ZERO, "{m}");
        } else {
            assert!(p.output >= p.input, "{m}: output cheaper than input");
            assert!(
                p.max_output_tokens.is_some(),
                "{m}: needs max_output_tokens for reservations"
            );
        }
        if let Some(c) = p.cached_input {
            assert!(c < p.input, "{m}: cache hits must be cheaper");
        }
        // Claude 3 Haiku's published write price is $0.30, not 1.25 x $0.25.
        if m.starts_with("claude") && m != "claude-3-haiku" {
            // Anthropic: writes 1.25x input, reads 0.1x input (5-minute cache).
            assert_eq!(
                p.cache_write,
                Some(Usd::from_picos(p.input.picos() / 4 * 5)),
                "{m}"
            );
            assert_eq!(
                p.cache_read,
                Some(Usd::from_picos(p.input.picos() / 10)),
                "{m}"
            );
        }
    }
    assert_eq!(price("gpt-4o").input, usd("2.50"));
    assert_eq!(price("gpt-4o-mini").output, usd("0.60"));
    assert_eq!(price("claude-sonnet-4-5").output, usd("15"));
}

#[test]
fn test_models_have_the_documented_prices() {
    let g = price("fake-gpt");
    assert_eq!(
        (g.input, g.output, g.cached_input),
        (usd("1"), usd("2"), Some(usd("0.5")))
    );
    let c = price("fake-claude");
    assert_eq!(
        (c.input, c.output, c.cache_write, c.cache_read),
        (usd("3"), usd("15"), Some(usd("3.75")), Some(usd("0.30")))
    );
}

#[test]
fn dated_snapshots_resolve_to_their_family_and_never_to_a_shorter_sibling() {
    let t = shipped();
    let same = |a: &str, b: &str| {
        assert_eq!(t.lookup(a), t.lookup(b), "{a} should price like {b}");
        assert!(t.lookup(a).is_some(), "{a}");
    };
    same("gpt-4o-2024-08-06", "gpt-4o");
    same("gpt-4o-mini-2024-07-18", "gpt-4o-mini");
    same("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano");
    same("o4-mini-2025-04-16", "o4-mini");
    same("claude-sonnet-4-5-20250929", "claude-sonnet-4-5");
    same("claude-opus-4-1-20250805", "claude-opus-4-1");
    same("claude-opus-4-20250514", "claude-opus-4");
    same("claude-3-5-sonnet-latest", "claude-3-5-sonnet");
    let is = |a: &str, b: &str| std::ptr::eq(t.lookup(a).unwrap(), t.lookup(b).unwrap());
    assert!(is("gpt-4o-mini-2024-07-18", "gpt-4o-mini"));
    assert!(!is("gpt-4o-mini-2024-07-18", "gpt-4o"));
    // Same price today, but a different entry: a future change to one must not leak.
    assert!(is("claude-opus-4-1-20250805", "claude-opus-4-1"));
    assert!(!is("claude-opus-4-1-20250805", "claude-opus-4"));
    // An exact snapshot entry beats its family.
    assert_eq!(t.lookup("gpt-4o-2024-05-13").unwrap().input, usd("5"));
}

#[test]
fn lookalike_ids_do_not_borrow_a_price() {
    let t = shipped();
    for m in [
        "gpt-4o-mini-tts", // a different product whose id starts with a priced id
        "gpt-4o-realtime-preview",
        "gpt-4o-2024-08-06-extra",
        "gpt-4o-",
        "gpt-4",
        "GPT-4O",
        "ft:gpt-4o-mini-2024-07-18:org::abc",
        "claude-sonnet-4-5-2025",
        "",
        "-2024-08-06",
    ] {
        assert!(t.lookup(m).is_none(), "{m:?} resolved to {:?}", t.lookup(m));
    }
}

#[test]
fn the_longest_matching_id_wins() {
    let mut t = PriceTable::empty();
    let p = |s: &str| Price {
        input: usd(s),
        output: usd(s),
        cached_input: None,
        cache_write: None,
        cache_read: None,
        max_output_tokens: None,
    };
    t.insert("m", p("1"));
    t.insert("m-2024-01-01", p("2"));
    t.insert("m-x", p("3"));
    assert_eq!(t.lookup("m-2024-01-01-20250101").unwrap().input, usd("2"));
    assert_eq!(t.lookup("m-x-20250101").unwrap().input, usd("3"));
    assert_eq!(t.lookup("m-20250101").unwrap().input, usd("1"));
}

#[test]
fn unknown_models_are_refused_unless_a_fallback_is_set() {
    let mut t = shipped().clone();
    let e = t.resolve("mystery-model").unwrap_err();
    assert!(matches!(e, PriceError::UnknownModel { .. }));
    assert!(e.to_string().contains("`mystery-model`"), "{e}");
    assert!(e.to_string().contains("fallback"), "{e}");
    let fallback = price("gpt-4o").clone();
    t.set_fallback(Some(fallback.clone()));
    assert_eq!(t.resolve("mystery-model").unwrap(), &fallback);
    assert_eq!(t.resolve("gpt-4o-mini").unwrap(), price("gpt-4o-mini"));
    // A huge hostile model id is not echoed whole.
    let e = PriceTable::empty()
        .resolve(&"x".repeat(100_000))
        .unwrap_err()
        .to_string();
    assert!(e.len() < 600, "{}", e.len());
}

#[test]
fn openai_cached_tokens_are_a_subset_of_prompt_tokens() {
    let p = price("fake-gpt");
    // 1M prompt tokens, 400k of them cached, 500k completion:
    // 600k x $1 + 400k x $0.50 + 500k x $2 = 0.60 + 0.20 + 1.00.
    let u = Usage::openai(1_000_000, 500_000, 400_000);
    assert_eq!(p.cost(&u), usd("1.80"));
    // All cached.
    assert_eq!(p.cost(&Usage::openai(1_000_000, 0, 1_000_000)), usd("0.50"));
    // A response claiming more cached than prompt tokens: the cached ones are still billed
    // and nothing goes negative.
    assert_eq!(p.cost(&Usage::openai(10, 0, 1_000_000)), usd("0.50"));
}

#[test]
fn anthropic_cache_tokens_are_billed_on_top_of_input_tokens() {
    let p = price("fake-claude");
    // 100k input + 200k cache write + 1M cache read + 10k output:
    // 0.30 + 0.75 + 0.30 + 0.15.
    let u = Usage::anthropic(100_000, 10_000, 200_000, 1_000_000);
    assert_eq!(p.cost(&u), usd("1.50"));
}

#[test]
fn missing_cache_prices_fall_back_to_the_input_price() {
    let mut p = price("fake-claude").clone();
    p.cache_write = None;
    p.cache_read = None;
    p.cached_input = None;
    let u = Usage {
        input_tokens: 1_000_000,
        cached_input_tokens: 500_000,
        cache_write_tokens: 1_000_000,
        cache_read_tokens: 1_000_000,
        output_tokens: 0,
    };
    assert_eq!(p.cost(&u), usd("9"));
}

#[test]
fn costs_round_up_once_and_saturate() {
    let p = price("text-embedding-3-small"); // $0.02 per 1M: 20,000 pico per token
    assert_eq!(p.cost(&Usage::openai(1, 0, 0)), Usd::from_picos(20_000));
    let mut odd = p.clone();
    odd.input = Usd::from_picos(1); // a millionth of a picodollar per token
    assert_eq!(odd.cost(&Usage::openai(1, 0, 0)), Usd::from_picos(1));
    assert_eq!(
        odd.cost(&Usage::openai(1_000_000, 0, 0)),
        Usd::from_picos(1)
    );
    assert_eq!(
        odd.cost(&Usage::openai(1_000_001, 0, 0)),
        Usd::from_picos(2)
    );
    assert_eq!(odd.cost(&Usage::default()), Usd::ZERO);
    let max = Usage {
        input_tokens: u64::MAX,
        output_tokens: u64::MAX,
        cached_input_tokens: 0,
        cache_write_tokens: u64::MAX,
        cache_read_tokens: u64::MAX,
    };
    let mut dear = price("fake-claude").clone();
    dear.output = Usd::MAX;
    dear.input = Usd::MAX;
    dear.cache_write = Some(Usd::MAX);
    dear.cache_read = Some(Usd::MAX);
    assert_eq!(dear.cost(&max), Usd::MAX, "an i128 overflow saturates");
    assert_eq!(price("fake-gpt").cost(&max), Usd::MAX);
}

#[test]
fn worst_case_uses_the_request_max_else_the_model_max() {
    let g = price("fake-gpt");
    assert_eq!(g.worst_case(1_000_000, Some(500_000)), Some(usd("2")));
    // max_output_tokens 4096 at $2/1M.
    assert_eq!(g.worst_case(0, None), Some(usd("0.008192")));
    // Anthropic: the prompt may all become a cache write (dearer than input).
    let c = price("fake-claude");
    assert_eq!(c.worst_case(1_000_000, Some(0)), Some(usd("3.75")));
    let mut none = g.clone();
    none.max_output_tokens = None;
    assert_eq!(none.worst_case(10, None), None);
}

#[test]
fn a_user_file_overrides_whole_entries_and_adds_models() {
    let (t, _f) = load(
        "version: 1\nupdated: \"2030-01-01\"\nmodels:\n  gpt-4o:\n    input: 9\n    output: 10.5\n  my-local:\n    input: \"0\"\n    output: \"0\"\nfallback:\n  input: \"1\"\n  output: \"1\"\n",
    );
    let t = t.unwrap();
    let g = t.lookup("gpt-4o").unwrap();
    assert_eq!((g.input, g.output), (usd("9"), usd("10.5")));
    assert_eq!(
        g.cached_input, None,
        "an override does not inherit shipped fields"
    );
    assert_eq!(t.lookup("gpt-4o-2024-08-06"), Some(g));
    assert!(t.lookup("my-local").is_some());
    assert!(
        t.lookup("claude-sonnet-4-5").is_some(),
        "shipped models stay"
    );
    assert_eq!(t.updated(), Some("2030-01-01"));
    assert_eq!(t.resolve("anything").unwrap().input, usd("1"));
}

#[test]
fn errors_name_file_line_column_and_field() {
    let (e, path) = load_err("version: 1\nmodels:\n  a:\n    input: \"1\"\n    outptu: \"2\"\n");
    assert!(e.starts_with(&format!("{path}:5:5: ")), "{e}");
    assert!(e.contains("models.a: unknown field `outptu`"), "{e}");

    let (e, path) = load_err(
        "version: 1\nmodels:\n  a:\n    input: \"1\"\n    output: \"2\"\n  b:\n    input: \"1\"\n    output: \"2.x\"\n",
    );
    assert!(e.starts_with(&format!("{path}:8:14: ")), "{e}");
    assert!(e.contains("models.b.output: `2.x` is not an amount"), "{e}");

    let (e, _) = load_err("version: 1\nmodels:\n  a:\n    input: \"-1\"\n    output: \"2\"\n");
    assert!(
        e.contains(":4:") && e.contains("models.a.input") && e.contains("negative"),
        "{e}"
    );

    let (e, _) = load_err("version: 1\nmodels:\n  a:\n    input: 0.0000000000001\n    output: 1\n");
    assert!(e.contains(":4:") && e.contains("12 decimal places"), "{e}");

    let (e, _) = load_err("version: 1\nmodels:\n  a:\n    input: \"1\"\n");
    assert!(
        e.contains(":4:") && e.contains("missing field `output`"),
        "{e}"
    );

    let (e, _) = load_err(
        "version: 1\nmodels:\n  a:\n    input: 1\n    output: 1\n  b:\n    input: 1\n    output: 1\n  a:\n    input: 2\n    output: 2\n",
    );
    assert!(
        e.contains(":9:3: ") && e.contains("duplicate model `a`"),
        "{e}"
    );

    let (e, _) = load_err("version: 2\nmodels: {}\n");
    assert!(
        e.contains(":1:1: ") && e.contains("version 1, not 2"),
        "{e}"
    );

    let (e, _) = load_err(
        "version: 1\nmodels:\n  a:\n    input: 1\n    output: 1\n    max_output_tokens: 0\n",
    );
    assert!(
        e.contains(":6:5: ") && e.contains("models.a.max_output_tokens"),
        "{e}"
    );

    let (e, _) = load_err(
        "version: 1\nmodels:\n  a:\n    input: 1\n    output: 1\n    max_output_tokens: -5\n",
    );
    assert!(e.contains(":6:") && e.contains("max_output_tokens"), "{e}");

    let (e, _) = load_err("version: 1\nmodels:\n  \"a b\":\n    input: 1\n    output: 1\n");
    assert!(e.contains("not a model id"), "{e}");

    let (e, _) = load_err("version: 1\nprices: {}\n");
    assert!(e.contains("unknown field `prices`"), "{e}");

    let (e, _) = load_err("version: 1\nmodels:\n\tgpt-x:\n    input: 1\n");
    assert!(
        e.contains(":3:") && e.contains("indented with a tab"),
        "{e}"
    );

    let (e, _) = load_err("models: {}\n");
    assert!(e.contains("missing field `version`"), "{e}");
}

#[test]
fn unreadable_and_oversized_files_are_refused_with_the_path() {
    let e = PriceTable::load(std::path::Path::new("/nonexistent/prices.yaml")).unwrap_err();
    assert!(matches!(e, PriceError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/prices.yaml"), "{e}");
    let e = PriceTable::load(std::path::Path::new("/dev/zero")).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let big = format!("version: 1\n#{}\n", "x".repeat(2 << 20));
    let (e, _) = load_err(&big);
    assert!(e.contains("the limit is"), "{e}");
}

#[test]
fn usage_round_trips_through_json() {
    let u = Usage::anthropic(1, 2, 3, 4);
    let j = serde_json::to_string(&u).unwrap();
    assert_eq!(serde_json::from_str::<Usage>(&j).unwrap(), u);
}
