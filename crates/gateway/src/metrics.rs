//! Prometheus text for the gateway's counters and breaker states.

use crate::event::Decision;
use crate::provider::Provider;
use crate::Gateway;
use std::fmt::Write;
use std::sync::atomic::Ordering;

pub fn render(gw: &Gateway, out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP ironcage_llm_requests_total LLM gateway requests by decision."
    );
    let _ = writeln!(out, "# TYPE ironcage_llm_requests_total counter");
    for d in Decision::ALL {
        let _ = writeln!(
            out,
            "ironcage_llm_requests_total{{decision=\"{}\"}} {}",
            d.name(),
            gw.stats.count(d)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ironcage_llm_cost_picodollars_total Metered LLM cost (1e-12 USD)."
    );
    let _ = writeln!(out, "# TYPE ironcage_llm_cost_picodollars_total counter");
    let _ = writeln!(
        out,
        "ironcage_llm_cost_picodollars_total {}",
        gw.stats.cost_picos.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP ironcage_llm_tokens_total Metered LLM tokens.");
    let _ = writeln!(out, "# TYPE ironcage_llm_tokens_total counter");
    let _ = writeln!(
        out,
        "ironcage_llm_tokens_total{{direction=\"input\"}} {}",
        gw.stats.input_tokens.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "ironcage_llm_tokens_total{{direction=\"output\"}} {}",
        gw.stats.output_tokens.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP ironcage_llm_breaker_state Circuit breaker state per upstream (0 closed, 1 half-open, 2 open).");
    let _ = writeln!(out, "# TYPE ironcage_llm_breaker_state gauge");
    for p in Provider::ALL {
        if let Some(b) = gw.breaker(p) {
            let v = match b.state() {
                ironcage_guard::breaker::State::Closed => 0,
                ironcage_guard::breaker::State::HalfOpen => 1,
                ironcage_guard::breaker::State::Open => 2,
            };
            let _ = writeln!(
                out,
                "ironcage_llm_breaker_state{{upstream=\"{}\"}} {v}",
                p.name()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ironcage_llm_breaker_opened_total Times each upstream's breaker opened."
    );
    let _ = writeln!(out, "# TYPE ironcage_llm_breaker_opened_total counter");
    for p in Provider::ALL {
        if let Some(b) = gw.breaker(p) {
            let _ = writeln!(
                out,
                "ironcage_llm_breaker_opened_total{{upstream=\"{}\"}} {}",
                p.name(),
                b.stats().opened
            );
        }
    }
}
