//! The rules a card must keep beyond its JSON Schema: it may not contradict itself.

use std::collections::HashSet;

use crate::card::{ArchitectureKind, Card, Category, Precision, Unit, Variant};

/// Two computed figures closer than this are equal (scores have one decimal).
const EPSILON: f64 = 1e-6;

impl Card {
    /// Every way the card contradicts itself, one sentence each; empty when it is consistent.
    ///
    /// The rules: ids are unique; active ≤ total parameters (equal for dense,
    /// smaller for MoE); memory at each precision is at least total
    /// parameters × bytes per parameter, and shrinks with the precision; the
    /// minimum VRAM holds the smallest figure and each recommended GPU holds
    /// its precision's; capabilities agree with the modalities, the thinking
    /// price and the benchmark categories; the output fits the context; each
    /// improvement over the baseline equals the variant's score minus the
    /// baseline's; the family history's last row agrees with the variants.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for v in &self.variants {
            if !seen.insert(v.id.as_str()) {
                problems.push(format!("variant id {} appears twice", v.id));
            }
            check_variant(v, &mut problems);
        }
        self.check_comparison(&mut problems);
        self.check_history(&mut problems);
        problems
    }

    fn check_comparison(&self, problems: &mut Vec<String>) {
        let cmp = &self.gemma_3_comparison;
        for v in &self.variants {
            if cmp.improvements.get(&v.id).is_none() {
                problems.push(format!("{}: no improvements over {} are given", v.id, cmp.baseline));
            }
        }
        for (id, improvements) in cmp.improvements.iter() {
            let Some(v) = self.variant(id).filter(|v| v.id == id) else {
                problems
                    .push(format!("improvements over {} name unknown variant {id}", cmp.baseline));
                continue;
            };
            for (name, _) in cmp.baseline_scores.iter() {
                if improvements.get(name).is_none() {
                    problems.push(format!(
                        "{id}: improvement on {name} over {} is missing",
                        cmp.baseline
                    ));
                }
            }
            for (name, &claimed) in improvements.iter() {
                let Some(base) = cmp.baseline_scores.get(name) else {
                    problems.push(format!(
                        "{id}: improvement on {name} has no {} score to compare with",
                        cmp.baseline
                    ));
                    continue;
                };
                let Some(score) = v.benchmarks.find(name) else {
                    problems.push(format!(
                        "{id}: improvement on {name} but the variant has no {name} score"
                    ));
                    continue;
                };
                let actual = score.score - base;
                if (claimed - actual).abs() > EPSILON {
                    problems.push(format!(
                        "{id}: improvement on {name} is {claimed:+} but {} − {base} = {actual:+.1}",
                        score.score
                    ));
                }
            }
        }
    }

    fn check_history(&self, problems: &mut Vec<String>) {
        let Some(last) = self.family_history.last() else {
            problems.push("the family history is empty".to_string());
            return;
        };
        if last.generation != self.family {
            problems.push(format!(
                "the family history ends with {}, not with this card's family {}",
                last.generation, self.family
            ));
            return;
        }
        let sizes: Vec<&str> = self.variants.iter().map(|v| v.size_label.as_str()).collect();
        if last.sizes.iter().map(String::as_str).collect::<Vec<_>>() != sizes {
            problems.push(format!(
                "the family history lists {} sizes {:?} but the variants are {sizes:?}",
                last.generation, last.sizes
            ));
        }
        let context = self.variants.iter().map(|v| v.context_length).max().unwrap_or(0);
        if last.context_length != context {
            problems.push(format!(
                "the family history gives {} a {}-token context but its longest variant has {context}",
                last.generation, last.context_length
            ));
        }
        let any = |f: fn(&Variant) -> bool| self.variants.iter().any(f);
        let flags = [
            ("vision", last.vision, any(|v| v.capabilities.vision)),
            ("thinking", last.thinking, any(|v| v.capabilities.thinking)),
            ("function calling", last.function_calling, any(|v| v.capabilities.function_calling)),
        ];
        for (what, history, variants) in flags {
            if history != variants {
                problems.push(format!(
                    "the family history says {} {} {what} but the variants say {}",
                    last.generation,
                    if history { "has" } else { "lacks" },
                    if variants { "one has it" } else { "none has it" }
                ));
            }
        }
        for v in &self.variants {
            if !in_quarter(&v.release, &last.release) {
                problems.push(format!(
                    "{}: released {} but the family history says {} came out in {}",
                    v.id, v.release, last.generation, last.release
                ));
            }
        }
    }
}

/// Whether month `YYYY-MM` falls in quarter `YYYY-Qn`.
fn in_quarter(month: &str, quarter: &str) -> bool {
    let (Some((y1, m)), Some((y2, q))) = (month.split_once('-'), quarter.split_once("-Q")) else {
        return false;
    };
    let (Ok(m), Ok(q)) = (m.parse::<u32>(), q.parse::<u32>()) else { return false };
    y1 == y2 && (1..=12).contains(&m) && (m - 1) / 3 + 1 == q
}

fn check_variant(v: &Variant, problems: &mut Vec<String>) {
    let id = &v.id;
    let a = &v.architecture;
    if a.active_params_b > a.total_params_b {
        problems.push(format!(
            "{id}: {}B active parameters exceed the {}B total",
            a.active_params_b, a.total_params_b
        ));
    }
    match a.kind {
        ArchitectureKind::Dense => {
            if a.active_params_b != a.total_params_b {
                problems.push(format!(
                    "{id}: a dense model uses all its parameters, but active is {}B of {}B",
                    a.active_params_b, a.total_params_b
                ));
            }
            if a.experts.is_some() {
                problems.push(format!("{id}: a dense model has no experts"));
            }
        }
        ArchitectureKind::Moe => {
            if a.active_params_b >= a.total_params_b {
                problems.push(format!(
                    "{id}: a Mixture-of-Experts model uses fewer parameters per token than it has"
                ));
            }
            if let Some(e) = &a.experts {
                if let (Some(count), Some(k)) = (e.count, e.routing_top_k) {
                    if k > count {
                        problems.push(format!("{id}: routes to {k} of only {count} experts"));
                    }
                }
            }
        }
    }

    let mut precisions = HashSet::new();
    for m in &v.memory {
        if !precisions.insert(m.precision) {
            problems.push(format!("{id}: memory at {} is given twice", m.precision.as_str()));
        }
        let weights = a.total_params_b * m.precision.bytes_per_param();
        if m.gb + EPSILON < weights {
            problems.push(format!(
                "{id}: {} GB at {} cannot hold {}B parameters × {} bytes = {weights} GB",
                m.gb,
                m.precision.as_str(),
                a.total_params_b,
                m.precision.bytes_per_param()
            ));
        }
    }
    let present: Vec<_> = Precision::ALL.iter().filter_map(|&p| v.memory_at(p)).collect();
    for pair in present.windows(2) {
        if pair[1].gb > pair[0].gb {
            problems.push(format!(
                "{id}: {} needs more memory ({} GB) than the wider {} ({} GB)",
                pair[1].precision.as_str(),
                pair[1].gb,
                pair[0].precision.as_str(),
                pair[0].gb
            ));
        }
    }
    if let Some(smallest) = present.last() {
        if v.minimum_vram_gb + EPSILON < smallest.gb {
            problems.push(format!(
                "{id}: minimum VRAM {} GB is below the {} GB it needs at {}",
                v.minimum_vram_gb,
                smallest.gb,
                smallest.precision.as_str()
            ));
        }
    }
    for h in &v.recommended_hardware {
        match v.memory_at(h.precision) {
            None => problems.push(format!(
                "{id}: {} is recommended for {} but the card gives no memory at {}",
                h.gpu,
                h.precision.as_str(),
                h.precision.as_str()
            )),
            Some(m) if h.vram_gb + EPSILON < m.gb => problems.push(format!(
                "{id}: {} has {} GB, less than the {} GB needed at {}",
                h.gpu,
                h.vram_gb,
                m.gb,
                h.precision.as_str()
            )),
            Some(_) => {}
        }
    }

    let caps = v.capabilities;
    let reads_images = v.modalities.input.iter().any(|m| m == "image");
    if caps.vision != reads_images {
        problems.push(format!(
            "{id}: vision is {} but image input is {}",
            caps.vision,
            if reads_images { "listed" } else { "not listed" }
        ));
    }
    if caps.thinking != v.pricing_usd_per_1m_tokens.thinking.is_some() {
        problems.push(format!(
            "{id}: a thinking price must be given exactly when the variant has a thinking mode (thinking is {})",
            caps.thinking
        ));
    }
    let p = v.pricing_usd_per_1m_tokens;
    if p.cached_input > p.input {
        problems.push(format!(
            "{id}: cached input (${}) costs more than input (${})",
            p.cached_input, p.input
        ));
    }
    let gated = [
        (Category::Vision, caps.vision, "vision"),
        (Category::FunctionCalling, caps.function_calling, "function calling"),
        (Category::ReasoningWithThinking, caps.thinking, "a thinking mode"),
    ];
    for (category, has, what) in gated {
        if !has && !v.benchmarks.get(category).is_empty() {
            problems.push(format!(
                "{id}: has {} benchmarks but not {what}",
                category.title().to_lowercase()
            ));
        }
    }
    let mut names = HashSet::new();
    for (_, s) in v.benchmarks.all() {
        if !names.insert(s.name.as_str()) {
            problems.push(format!("{id}: benchmark {} is scored twice", s.name));
        }
        let max = match s.unit {
            Unit::Percent => 100.0,
            Unit::OutOf10 => 10.0,
            Unit::Elo => f64::INFINITY,
        };
        if !(0.0..=max).contains(&s.score) {
            problems.push(format!("{id}: {} score {} is out of range", s.name, s.score));
        }
    }
    if v.max_output_tokens > v.context_length {
        problems.push(format!(
            "{id}: {} output tokens do not fit a {}-token context",
            v.max_output_tokens, v.context_length
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarters() {
        assert!(in_quarter("2026-03", "2026-Q1"));
        assert!(in_quarter("2026-04", "2026-Q2"));
        assert!(!in_quarter("2026-04", "2026-Q1"));
        assert!(!in_quarter("2025-03", "2026-Q1"));
        assert!(!in_quarter("2026-13", "2026-Q5"));
        assert!(!in_quarter("march", "2026-Q1"));
    }
}
