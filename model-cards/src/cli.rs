//! `seed models …`: the subcommand the `seed` binary mounts, kept here so the CLI stays thin.
//!
//! The binary adds `Models { #[command(subcommand)] cmd: ModelsCommand }` and
//! exits with [`exit_code`] of what [`ModelsCommand::run`] returns.

use std::io::Write;

use serde_json::json;

use seed_event::{Error, ErrorKind, Result};

use crate::card::{Card, Category, Precision, Unit, Variant};
use crate::pick::{pick, Need, PickQuery, Prefer};
use crate::render::{context, difference, params, score, usd};

/// How a `seed models` command ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; exit status 0.
    Success,
    /// `pick` found no model that meets the needs (the output says which); exit status 1.
    NoFit,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::NoFit => 1,
        }
    }
}

/// The exit status for a result of [`ModelsCommand::run`]: 0 done, 1 no model fits
/// (or output failed), 2 invalid input such as an unknown model id or need.
pub fn exit_code(result: &Result<Exit>) -> u8 {
    match result {
        Ok(exit) => exit.code(),
        Err(e) if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::NotFound) => 2,
        Err(_) => 1,
    }
}

/// `seed models`: the model cards built into the binary.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ModelsCommand {
    /// List the models on the cards with their size, context, capabilities and price
    #[command(after_help = "Examples:\n  seed models list\n  seed models list --json")]
    List {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show everything the card says about one model
    #[command(
        after_help = "Examples:\n  seed models show google/gemma-4-31b-it\n  seed models show gemma-4-26b-a4b-it --json"
    )]
    Show {
        /// The model id, with or without the `google/` prefix
        id: String,
        /// Print the model's card entry as JSON
        #[arg(long)]
        json: bool,
    },
    /// Put the benchmark scores of two models side by side, with the difference (second minus first)
    #[command(
        after_help = "Example:\n  seed models compare google/gemma-4-26b-a4b-it google/gemma-4-31b-it"
    )]
    Compare {
        /// The first model id
        a: String,
        /// The second model id
        b: String,
    },
    /// Pick the model that meets a task's needs, and say why; exits 1 when none does
    #[command(
        after_help = "Examples:\n  seed models pick --needs vision,tools\n  seed models pick --min-context 200000 --prefer latency --json\n\nNeeds: vision, tools (or function_calling), thinking."
    )]
    Pick {
        /// Comma-separated capabilities the model must have: vision, tools, thinking
        #[arg(long, value_delimiter = ',')]
        needs: Vec<String>,
        /// The shortest context window the model may have, in tokens
        #[arg(long, value_name = "TOKENS")]
        min_context: Option<u64>,
        /// What to optimise among the models that meet the needs
        #[arg(long, value_enum, default_value = "cost")]
        prefer: Prefer,
        /// Print {"model": …, "reasons": […]} instead of text
        #[arg(long)]
        json: bool,
    },
}

impl ModelsCommand {
    /// Runs the command on the built-in cards, writing to `out`.
    pub fn run(&self, out: &mut dyn Write) -> Result<Exit> {
        self.run_on(crate::gemma4()?, out)
    }

    /// Runs the command on `card` (the built-in one, or another in tests).
    pub fn run_on(&self, card: &Card, out: &mut dyn Write) -> Result<Exit> {
        let (text, exit) = match self {
            ModelsCommand::List { json } => {
                (if *json { list_json(card) } else { list_text(card) }, Exit::Success)
            }
            ModelsCommand::Show { id, json } => {
                let v = variant(card, id)?;
                let text = if *json {
                    pretty(&serde_json::to_value(v).unwrap_or_default())
                } else {
                    show_text(card, v)
                };
                (text, Exit::Success)
            }
            ModelsCommand::Compare { a, b } => {
                (compare_text(variant(card, a)?, variant(card, b)?), Exit::Success)
            }
            ModelsCommand::Pick { needs, min_context, prefer, json } => {
                let needs = needs
                    .iter()
                    .filter(|n| !n.trim().is_empty())
                    .map(|n| Need::parse(n))
                    .collect::<Result<Vec<Need>>>()?;
                let query = PickQuery { needs, min_context: *min_context, prefer: *prefer };
                match pick(card, &query) {
                    Ok(choice) => {
                        let text = if *json {
                            pretty(&json!({"model": choice.model, "reasons": choice.reasons}))
                        } else {
                            let mut t = format!("{}\n", choice.model);
                            for r in &choice.reasons {
                                t.push_str(&format!("  - {r}\n"));
                            }
                            t
                        };
                        (text, Exit::Success)
                    }
                    Err(no) => {
                        let text = if *json {
                            pretty(
                                &json!({"model": null, "failed_need": no.failed_need, "reasons": no.reasons}),
                            )
                        } else {
                            let mut t =
                                format!("no model fits: the need {} failed\n", no.failed_need);
                            for r in &no.reasons {
                                t.push_str(&format!("  - {r}\n"));
                            }
                            t
                        };
                        (text, Exit::NoFit)
                    }
                }
            }
        };
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("writing the output of seed models", e))?;
        Ok(exit)
    }
}

fn variant<'c>(card: &'c Card, id: &str) -> Result<&'c Variant> {
    card.variant(id).ok_or_else(|| {
        Error::invalid("model id", format!("{id:?} is not on the cards; valid ids: {}", card.ids()))
    })
}

fn pretty(value: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Left-aligned columns separated by two spaces.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn list_text(card: &Card) -> String {
    let mut rows = vec![[
        "ID",
        "ARCH",
        "PARAMS (ACTIVE)",
        "CONTEXT",
        "VISION",
        "TOOLS",
        "THINKING",
        "USD/1M IN",
        "USD/1M OUT",
    ]
    .map(String::from)
    .to_vec()];
    for v in &card.variants {
        let a = &v.architecture;
        let c = v.capabilities;
        rows.push(vec![
            v.id.clone(),
            match a.kind {
                crate::card::ArchitectureKind::Moe => "MoE".to_string(),
                crate::card::ArchitectureKind::Dense => "dense".to_string(),
            },
            format!("{} ({})", params(a.total_params_b), params(a.active_params_b)),
            context(v.context_length),
            yes_no(c.vision).to_string(),
            yes_no(c.function_calling).to_string(),
            yes_no(c.thinking).to_string(),
            usd(v.pricing_usd_per_1m_tokens.input),
            usd(v.pricing_usd_per_1m_tokens.output),
        ]);
    }
    columns(&rows)
}

fn list_json(card: &Card) -> String {
    let items: Vec<serde_json::Value> = card
        .variants
        .iter()
        .map(|v| {
            json!({
                "id": v.id,
                "name": v.name,
                "architecture": v.architecture,
                "context_length": v.context_length,
                "capabilities": v.capabilities,
                "pricing_usd_per_1m_tokens": v.pricing_usd_per_1m_tokens,
            })
        })
        .collect();
    pretty(&serde_json::Value::Array(items))
}

fn show_text(card: &Card, v: &Variant) -> String {
    let a = &v.architecture;
    let c = v.capabilities;
    let p = v.pricing_usd_per_1m_tokens;
    let mut t = format!("{} ({})\n{}\n\n", v.name, v.id, v.summary);
    let mut rows = vec![
        vec!["Architecture".to_string(), a.kind.to_string()],
        vec![
            "Parameters".to_string(),
            format!(
                "{} total, {} active per token",
                params(a.total_params_b),
                params(a.active_params_b)
            ),
        ],
    ];
    if let Some(k) = a.experts.as_ref().and_then(|e| e.routing_top_k) {
        rows.push(vec!["Expert routing".to_string(), format!("top-{k}")]);
    }
    rows.extend([
        vec!["Context".to_string(), format!("{} tokens", context(v.context_length))],
        vec![
            "Max output".to_string(),
            format!("{} tokens", crate::pick::thousands(v.max_output_tokens)),
        ],
        vec![
            "Input / output".to_string(),
            format!("{} / {}", v.modalities.input.join(", "), v.modalities.output.join(", ")),
        ],
        vec![
            "Capabilities".to_string(),
            format!(
                "vision {}, function calling {}, thinking {}",
                yes_no(c.vision),
                yes_no(c.function_calling),
                yes_no(c.thinking)
            ),
        ],
        vec![
            "Languages".to_string(),
            format!("{} (mainly {})", v.languages.supported, v.languages.primary.join(", ")),
        ],
        vec!["License".to_string(), v.license.clone()],
        vec!["Released".to_string(), v.release.clone()],
        vec![
            "Tokenizer".to_string(),
            format!("{}, {} vocabulary", v.tokenizer.kind, v.tokenizer.vocabulary),
        ],
        vec![
            "Turn markers".to_string(),
            format!("{} … {}", v.chat_format.turn_start, v.chat_format.turn_end),
        ],
        vec!["Stop sequences".to_string(), v.chat_format.stop_sequences.join(", ")],
        vec![
            "Price per 1M".to_string(),
            format!(
                "input {}, output {}, cached input {}{} (estimates)",
                usd(p.input),
                usd(p.output),
                usd(p.cached_input),
                p.thinking.map(|th| format!(", thinking {}", usd(th))).unwrap_or_default()
            ),
        ],
    ]);
    let memory: Vec<String> = Precision::ALL
        .iter()
        .filter_map(|&pr| v.memory_at(pr).map(|m| format!("{} ~{} GB", pr.as_str(), m.gb)))
        .collect();
    rows.push(vec![
        "Memory".to_string(),
        format!("{}; at least {} GB of VRAM", memory.join(", "), v.minimum_vram_gb),
    ]);
    let hardware: Vec<String> = v
        .recommended_hardware
        .iter()
        .map(|h| format!("{} ({})", h.gpu, h.precision.as_str()))
        .collect();
    rows.push(vec!["Hardware".to_string(), hardware.join(", ")]);
    t.push_str(&columns(&rows));
    for m in v.memory.iter() {
        if let Some(note) = &m.note {
            t.push_str(&format!("\nNote on {} memory: {note}\n", m.precision.as_str()));
        }
    }
    t.push_str("\nBenchmarks:\n");
    let mut bench = Vec::new();
    for (cat, s) in v.benchmarks.all() {
        bench.push(vec![
            format!("  {}", cat.title()),
            s.name.clone(),
            score(s.score, s.unit),
            s.measures.clone(),
        ]);
    }
    t.push_str(&columns(&bench));
    t.push_str("\nGood for:\n");
    for u in &v.intended_uses {
        t.push_str(&format!("  - {u}\n"));
    }
    t.push_str("\nLimitations:\n");
    for l in v.limitations.iter().chain(&card.shared_limitations) {
        t.push_str(&format!("  - {l}\n"));
    }
    t
}

fn compare_text(a: &Variant, b: &Variant) -> String {
    let mut names: Vec<(Category, &str, Unit)> = Vec::new();
    for v in [a, b] {
        for (c, s) in v.benchmarks.all() {
            if !names.iter().any(|(_, n, _)| *n == s.name) {
                names.push((c, &s.name, s.unit));
            }
        }
    }
    names.sort_by_key(|(c, _, _)| Category::ALL.iter().position(|x| x == c));
    let mut rows = vec![vec![
        "CATEGORY".to_string(),
        "BENCHMARK".to_string(),
        a.id.clone(),
        b.id.clone(),
        "DIFFERENCE".to_string(),
    ]];
    for (c, name, unit) in names {
        let sa = a.benchmarks.find(name).map(|s| s.score);
        let sb = b.benchmarks.find(name).map(|s| s.score);
        let show = |s: Option<f64>| s.map(|s| score(s, unit)).unwrap_or_else(|| "—".to_string());
        rows.push(vec![
            c.title().to_string(),
            name.to_string(),
            show(sa),
            show(sb),
            match (sa, sb) {
                (Some(x), Some(y)) => difference(y - x, unit),
                _ => "—".to_string(),
            },
        ]);
    }
    let mut t = columns(&rows);
    t.push_str(&format!("\nDIFFERENCE is {} minus {}; — means not scored.\n", b.id, a.id));
    t
}
