//! `pick`: the card's routing rules as a query over the data.

use serde::Serialize;

use seed_event::{Error, Result};

use crate::card::{Card, Variant};

/// Something a task cannot do without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Need {
    /// Image input.
    Vision,
    /// Native function calling.
    Tools,
    /// A thinking mode.
    Thinking,
}

impl Need {
    /// Every need, in the order they are listed.
    pub const ALL: [Need; 3] = [Need::Vision, Need::Tools, Need::Thinking];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Vision => "vision",
            Need::Tools => "tools",
            Need::Thinking => "thinking",
        }
    }

    /// What the need means, for reasons.
    pub fn describe(self) -> &'static str {
        match self {
            Need::Vision => "vision (image input)",
            Need::Tools => "tools (native function calling)",
            Need::Thinking => "thinking (a thinking mode)",
        }
    }

    /// Parses a need; `function_calling` and `function-calling` mean `tools`.
    pub fn parse(text: &str) -> Result<Need> {
        match text.trim().to_ascii_lowercase().as_str() {
            "vision" => Ok(Need::Vision),
            "tools" | "function_calling" | "function-calling" => Ok(Need::Tools),
            "thinking" => Ok(Need::Thinking),
            _ => Err(Error::invalid(
                "need",
                format!("{text:?} is not a need; valid needs: vision, tools (or function_calling), thinking"),
            )),
        }
    }

    /// Whether `variant` has what this need asks for.
    pub fn met_by(self, variant: &Variant) -> bool {
        let caps = variant.capabilities;
        match self {
            Need::Vision => caps.vision,
            Need::Tools => caps.function_calling,
            Need::Thinking => caps.thinking,
        }
    }
}

/// What to optimise once the needs are met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Prefer {
    /// The lowest price, then the fewest active parameters.
    #[default]
    Cost,
    /// The best mean benchmark score.
    Quality,
    /// The fewest active parameters, then the lowest price.
    Latency,
}

impl Prefer {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Prefer::Cost => "cost",
            Prefer::Quality => "quality",
            Prefer::Latency => "latency",
        }
    }
}

/// What a task needs and prefers: the argument of [`pick`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PickQuery {
    /// Capabilities the model must have.
    pub needs: Vec<Need>,
    /// The shortest context window, in tokens, the model may have.
    pub min_context: Option<u64>,
    /// What to optimise among the models that meet the needs.
    pub prefer: Prefer,
}

/// The model [`pick`] chose and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The chosen model's id.
    pub model: String,
    /// One sentence per rule that led to it, in order.
    pub reasons: Vec<String>,
}

/// Why no model fits: the need that failed and the rules applied until then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoFit {
    /// The need no remaining model meets: `vision`, `tools`, `thinking` or `min-context`.
    pub failed_need: String,
    /// One sentence per rule applied, the last one saying what failed.
    pub reasons: Vec<String>,
}

/// Applies the routing rules of `card` to `query`.
///
/// Each need keeps only the variants that have it (vision, function calling
/// and thinking route to the variants with them), then `min_context` keeps
/// those with a long enough window. Among what is left, `cost` takes the
/// lowest price of a million input plus a million output tokens (then the
/// fewest active parameters), `latency` the fewest active parameters (then
/// the lowest price), and `quality` the best mean of the percent-scale
/// benchmarks every remaining variant was scored on (then the lowest price).
///
/// ```
/// use model_cards::{pick, Need, PickQuery};
/// let card = model_cards::gemma4()?;
/// let query = PickQuery { needs: vec![Need::Vision], ..PickQuery::default() };
/// assert_eq!(pick(card, &query).unwrap().model, "google/gemma-4-31b-it");
/// assert_eq!(pick(card, &PickQuery::default()).unwrap().model, "google/gemma-4-26b-a4b-it");
/// # Ok::<(), seed_event::Error>(())
/// ```
pub fn pick(card: &Card, query: &PickQuery) -> Result<Choice, NoFit> {
    let mut left: Vec<&Variant> = card.variants.iter().collect();
    let mut reasons = Vec::new();
    let mut needs: Vec<Need> = Vec::new();
    for need in &query.needs {
        if !needs.contains(need) {
            needs.push(*need);
        }
    }
    for need in needs {
        let (keep, drop): (Vec<&Variant>, Vec<&Variant>) =
            left.iter().partition(|v| need.met_by(v));
        if keep.is_empty() {
            reasons.push(format!(
                "needs {}: no model left has it ({} {} not)",
                need.describe(),
                ids(&drop),
                if drop.len() == 1 { "does" } else { "do" }
            ));
            return Err(NoFit { failed_need: need.as_str().to_string(), reasons });
        }
        reasons.push(narrowed(&format!("needs {}", need.describe()), &keep, &drop, "has it"));
        left = keep;
    }
    if let Some(min) = query.min_context {
        let (keep, drop): (Vec<&Variant>, Vec<&Variant>) =
            left.iter().partition(|v| v.context_length >= min);
        if keep.is_empty() {
            let longest = drop.iter().map(|v| v.context_length).max().unwrap_or(0);
            reasons.push(format!(
                "needs a context of at least {} tokens: no model left has it (the longest is {})",
                thousands(min),
                thousands(longest)
            ));
            return Err(NoFit { failed_need: "min-context".to_string(), reasons });
        }
        let what = format!("needs a context of at least {} tokens", thousands(min));
        reasons.push(narrowed(&what, &keep, &drop, "has it"));
        left = keep;
    }
    let chosen = rank(&mut left, query.prefer, &mut reasons);
    Ok(Choice { model: chosen, reasons })
}

/// Sorts `left` best first by `prefer`, says why, and returns the winner's id.
fn rank(left: &mut [&Variant], prefer: Prefer, reasons: &mut Vec<String>) -> String {
    let price = |v: &Variant| v.pricing_usd_per_1m_tokens.blended();
    let active = |v: &Variant| v.architecture.active_params_b;
    let shared = shared_percent_benchmarks(left);
    let names: Vec<&str> = shared.iter().map(String::as_str).collect();
    let quality = |v: &Variant| v.mean_percent(&names).unwrap_or(0.0);
    match prefer {
        Prefer::Cost => {
            left.sort_by(|a, b| price(a).total_cmp(&price(b)).then(active(a).total_cmp(&active(b))))
        }
        Prefer::Latency => {
            left.sort_by(|a, b| active(a).total_cmp(&active(b)).then(price(a).total_cmp(&price(b))))
        }
        Prefer::Quality => left
            .sort_by(|a, b| quality(b).total_cmp(&quality(a)).then(price(a).total_cmp(&price(b)))),
    }
    let Some((best, rest)) = left.split_first() else { return String::new() };
    let measure = |v: &Variant| {
        match prefer {
        Prefer::Cost => format!("${:.2} per 1M input + 1M output tokens", price(v)),
        Prefer::Latency => format!("{}B active parameters per token", active(v)),
        Prefer::Quality => format!(
            "a mean score of {:.1} over the {} percent-scale benchmarks every candidate was scored on",
            quality(v),
            names.len()
        ),
    }
    };
    if rest.is_empty() {
        reasons.push(format!(
            "prefer {}: {} is the only model left ({})",
            prefer.as_str(),
            best.id,
            measure(best)
        ));
    } else {
        let others: Vec<String> = rest
            .iter()
            .map(|v| match prefer {
                Prefer::Cost => format!("${:.2} for {}", price(v), v.id),
                Prefer::Latency => format!("{}B for {}", active(v), v.id),
                Prefer::Quality => format!("{:.1} for {}", quality(v), v.id),
            })
            .collect();
        reasons.push(format!(
            "prefer {}: {} has {}, against {}",
            prefer.as_str(),
            best.id,
            measure(best),
            others.join(", ")
        ));
    }
    best.id.clone()
}

/// The percent-scale benchmarks every variant in `left` has a score for, in card order.
fn shared_percent_benchmarks(left: &[&Variant]) -> Vec<String> {
    let Some(first) = left.first() else { return Vec::new() };
    first
        .benchmarks
        .all()
        .filter(|(_, s)| s.unit == crate::card::Unit::Percent)
        .map(|(_, s)| s.name.clone())
        .filter(|name| left.iter().all(|v| v.benchmarks.find(name).is_some()))
        .collect()
}

fn ids(variants: &[&Variant]) -> String {
    variants.iter().map(|v| v.id.as_str()).collect::<Vec<_>>().join(", ")
}

fn narrowed(what: &str, keep: &[&Variant], drop: &[&Variant], has: &str) -> String {
    if drop.is_empty() {
        format!("{what}: every model left {has}")
    } else {
        format!(
            "{what}: {} {has}, {} {} not",
            ids(keep),
            ids(drop),
            if drop.len() == 1 { "does" } else { "do" }
        )
    }
}

/// `262144` as `262,144`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(262144), "262,144");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn needs_parse_with_aliases_and_name_the_valid_ones() {
        assert_eq!(Need::parse("vision").unwrap(), Need::Vision);
        assert_eq!(Need::parse(" Tools ").unwrap(), Need::Tools);
        assert_eq!(Need::parse("function_calling").unwrap(), Need::Tools);
        assert_eq!(Need::parse("function-calling").unwrap(), Need::Tools);
        assert_eq!(Need::parse("thinking").unwrap(), Need::Thinking);
        let err = Need::parse("audio").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid need: \"audio\" is not a need; valid needs: vision, tools (or function_calling), thinking"
        );
    }
}
