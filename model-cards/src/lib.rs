//! The cards of the language models Seed's archons choose from, as data that
//! cannot contradict itself: `gemma-4.json` (checked against `schema.json`
//! and by [`Card::check`]) is built into the crate, the Markdown cards are
//! rendered from it ([`render`]), and `seed models` queries it ([`cli`]).
//!
//! ```
//! use model_cards::{pick, Need, PickQuery, Prefer};
//!
//! let card = model_cards::gemma4()?;
//! assert!(card.check().is_empty());
//! let moe = card.variant("google/gemma-4-26b-a4b-it").unwrap();
//! assert!(moe.architecture.active_params_b < moe.architecture.total_params_b);
//!
//! // Images go to the variant with vision; otherwise cost picks the cheaper one.
//! let query = PickQuery { needs: vec![Need::Vision], ..PickQuery::default() };
//! assert_eq!(pick(card, &query).unwrap().model, "google/gemma-4-31b-it");
//! let query = PickQuery { prefer: Prefer::Latency, ..PickQuery::default() };
//! assert_eq!(pick(card, &query).unwrap().model, "google/gemma-4-26b-a4b-it");
//! # Ok::<(), seed_event::Error>(())
//! ```

pub mod card;
mod check;
pub mod cli;
pub mod pick;
pub mod render;

use std::sync::OnceLock;

use seed_event::{Error, Result};

pub use card::{Card, Precision, Variant};
pub use pick::{pick, Choice, Need, NoFit, PickQuery, Prefer};

/// The Gemma 4 card as committed: `model-cards/gemma-4.json`.
pub const GEMMA_4_JSON: &str = include_str!("../gemma-4.json");

/// The JSON Schema (draft 2020-12) of a card: `model-cards/schema.json`.
pub const SCHEMA_JSON: &str = include_str!("../schema.json");

/// Reads a card from JSON and checks it agrees with itself; the error lists every problem.
pub fn parse(text: &str) -> Result<Card> {
    let card: Card = serde_json::from_str(text).map_err(|e| {
        Error::invalid("model card", format!("does not match the card format: {e}"))
    })?;
    let problems = card.check();
    if problems.is_empty() {
        Ok(card)
    } else {
        Err(Error::invalid("model card", format!("contradicts itself: {}", problems.join("; "))))
    }
}

/// The built-in Gemma 4 card, parsed and checked once.
pub fn gemma4() -> Result<&'static Card> {
    static CARD: OnceLock<Result<Card, String>> = OnceLock::new();
    CARD.get_or_init(|| parse(GEMMA_4_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::corrupt("the built-in model-cards/gemma-4.json", e.clone()))
}
