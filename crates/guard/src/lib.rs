//! Governance primitives shared by the LLM gateway (`ironcage-gateway`), the execution
//! service and the CLI. Nothing here does I/O on the network: detectors, money, budgets,
//! breakers and the encrypted secret store are plain data structures with their own tests.

pub mod breaker;
pub mod budget;
pub mod money;
pub mod pii;
pub mod prices;
pub mod secrets;
