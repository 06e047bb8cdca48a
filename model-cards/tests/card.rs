//! The validator: `gemma-4.json` matches `schema.json`, the Rust model reads it
//! losslessly, and the card agrees with itself; each rule of `Card::check` is
//! shown to catch the contradiction it is for.

use model_cards::{Card, Precision, GEMMA_4_JSON, SCHEMA_JSON};
use serde_json::{json, Value};

fn data() -> Value {
    serde_json::from_str(GEMMA_4_JSON).expect("gemma-4.json is JSON")
}

fn schema_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(SCHEMA_JSON).expect("schema.json is JSON");
    jsonschema::draft202012::meta::validate(&schema).expect("schema.json is a 2020-12 schema");
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("compiles")
}

/// The problems `Card::check` finds after `edit` is applied to the data.
fn problems_after(edit: impl Fn(&mut Value)) -> Vec<String> {
    let mut value = data();
    edit(&mut value);
    let card: Card = serde_json::from_value(value).expect("still readable");
    card.check()
}

fn assert_caught(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem with {needle:?}, got {problems:#?}"
    );
}

/// A change to the card's JSON.
type Edit = Box<dyn Fn(&mut Value)>;

const MOE: usize = 0;
const DENSE: usize = 1;

#[test]
fn the_card_matches_its_schema() {
    let validator = schema_validator();
    let errors: Vec<String> =
        validator.iter_errors(&data()).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_schema_rejects_what_it_should() {
    let validator = schema_validator();
    let cases: Vec<(&str, Edit)> = vec![
        ("unknown field", Box::new(|v| v["variants"][0]["speed"] = json!("fast"))),
        (
            "architecture kind",
            Box::new(|v| v["variants"][0]["architecture"]["kind"] = json!("sparse")),
        ),
        (
            "negative params",
            Box::new(|v| v["variants"][0]["architecture"]["total_params_b"] = json!(-1)),
        ),
        (
            "dense with experts",
            Box::new(|v| v["variants"][1]["architecture"]["experts"] = json!({"routing_top_k": 2})),
        ),
        (
            "percent over 100",
            Box::new(|v| v["variants"][0]["benchmarks"]["general"][0]["score"] = json!(101)),
        ),
        (
            "MT-Bench over 10",
            Box::new(|v| v["variants"][0]["benchmarks"]["chat"][0]["score"] = json!(11)),
        ),
        (
            "unknown precision",
            Box::new(|v| v["variants"][0]["memory"][0]["precision"] = json!("fp8")),
        ),
        (
            "missing pricing",
            Box::new(|v| {
                v["variants"][0].as_object_mut().unwrap().remove("pricing_usd_per_1m_tokens");
            }),
        ),
        ("bad release", Box::new(|v| v["variants"][0]["release"] = json!("March 2026"))),
        ("unknown category", Box::new(|v| v["variants"][0]["benchmarks"]["audio"] = json!([]))),
        ("context as text", Box::new(|v| v["variants"][0]["context_length"] = json!("256K"))),
    ];
    for (what, edit) in cases {
        let mut value = data();
        edit(&mut value);
        assert!(!validator.is_valid(&value), "the schema accepted: {what}");
        // The Rust model refuses the shape errors too, or `check` catches the rule.
        let read: Result<Card, _> = serde_json::from_value(value);
        if let Ok(card) = read {
            assert!(!card.check().is_empty(), "{what}: neither serde nor check refused it");
        }
    }
}

/// The first path where `a` and `b` differ, numbers compared as numbers (`52` equals `52.0`).
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64() != y.as_f64()).then(|| format!("{path}: {x} vs {y}"))
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
            if keys(x) != keys(y) {
                return Some(format!("{path}: keys {:?} vs {:?}", keys(x), keys(y)));
            }
            x.iter().find_map(|(k, v)| first_difference(v, &y[k], &format!("{path}/{k}")))
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{path}: {} vs {} items", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}/{i}")))
        }
        _ => (a != b).then(|| format!("{path}: {a} vs {b}")),
    }
}

#[test]
fn the_rust_model_reads_the_card_losslessly() {
    let card: Card = serde_json::from_str(GEMMA_4_JSON).unwrap();
    let written = serde_json::to_value(&card).unwrap();
    assert_eq!(first_difference(&written, &data(), ""), None);
    let mut changed = data();
    changed["variants"][0]["memory"][0]["gb"] = json!(52.5);
    assert_eq!(
        first_difference(&written, &changed, "").as_deref(),
        Some("/variants/0/memory/0/gb: 52 vs 52.5")
    );
}

#[test]
fn the_card_agrees_with_itself() {
    let card = model_cards::gemma4().unwrap();
    assert_eq!(card.check(), Vec::<String>::new());
    assert_eq!(card.variants.len(), 2);
}

#[test]
fn the_figures_are_those_of_the_source_card() {
    let card = model_cards::gemma4().unwrap();
    let moe = card.variant("google/gemma-4-26b-a4b-it").unwrap();
    let dense = card.variant("google/gemma-4-31b-it").unwrap();
    assert_eq!((moe.architecture.total_params_b, moe.architecture.active_params_b), (25.2, 3.8));
    assert_eq!(
        (dense.architecture.total_params_b, dense.architecture.active_params_b),
        (30.7, 30.7)
    );
    assert_eq!((moe.context_length, dense.context_length), (262_144, 262_144));
    let pairs = [
        ("MMLU", 82.3, 86.7),
        ("HumanEval", 78.4, 84.2),
        ("GSM8K", 84.1, 91.3),
        ("MATH", 52.8, 67.4),
        ("MT-Bench", 8.9, 9.4),
        ("Chatbot Arena Elo", 1285.0, 1342.0),
    ];
    for (name, a, b) in pairs {
        assert_eq!(moe.benchmarks.find(name).unwrap().score, a, "{name}");
        assert_eq!(dense.benchmarks.find(name).unwrap().score, b, "{name}");
    }
}

#[test]
fn the_int4_contradiction_is_resolved_with_a_note() {
    let card = model_cards::gemma4().unwrap();
    let moe = card.variant("google/gemma-4-26b-a4b-it").unwrap();
    let int4 = moe.memory_at(Precision::Int4).unwrap();
    assert_eq!(int4.gb, 14.0);
    let note = int4.note.as_deref().expect("a note on the 26B-A4B int4 figure");
    assert!(
        note.contains("~7 GB") && note.contains("~14 GB") && note.contains("12.6 GB"),
        "{note}"
    );
    // And the rejected figure really is caught by the memory rule.
    let problems = problems_after(|v| v["variants"][MOE]["memory"][2]["gb"] = json!(7));
    assert_caught(&problems, "7 GB at int4 cannot hold 25.2B parameters × 0.5 bytes = 12.6 GB");
}

#[test]
fn each_rule_catches_its_contradiction() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["variants"][MOE]["architecture"]["active_params_b"] = json!(30)),
            "active parameters exceed the 25.2B total",
        ),
        (
            Box::new(|v| v["variants"][DENSE]["architecture"]["active_params_b"] = json!(20)),
            "a dense model uses all its parameters",
        ),
        (
            Box::new(|v| v["variants"][MOE]["architecture"]["active_params_b"] = json!(25.2)),
            "uses fewer parameters per token than it has",
        ),
        (
            Box::new(|v| {
                v["gemma_3_comparison"]["improvements"]["google/gemma-4-31b-it"]["MATH"] =
                    json!(25.0)
            }),
            "improvement on MATH is +25 but 67.4 − 42.1 = +25.3",
        ),
        (
            Box::new(|v| v["gemma_3_comparison"]["baseline_scores"]["MMLU"] = json!(78.0)),
            "improvement on MMLU is +3.7 but 82.3 − 78 = +4.3",
        ),
        (
            Box::new(|v| {
                v["gemma_3_comparison"]["improvements"]["google/gemma-4-26b-a4b-it"]
                    .as_object_mut()
                    .unwrap()
                    .remove("GSM8K");
            }),
            "improvement on GSM8K over Gemma 3 27B is missing",
        ),
        (
            Box::new(|v| v["variants"][DENSE]["memory"][0]["gb"] = json!(60)),
            "60 GB at bf16 cannot hold 30.7B parameters × 2 bytes",
        ),
        (
            Box::new(|v| v["variants"][MOE]["memory"][1]["gb"] = json!(60)),
            "int8 needs more memory (60 GB) than the wider bf16",
        ),
        (
            Box::new(|v| v["variants"][MOE]["minimum_vram_gb"] = json!(8)),
            "minimum VRAM 8 GB is below the 14 GB",
        ),
        (
            Box::new(|v| {
                v["variants"][MOE]["recommended_hardware"][3]["precision"] = json!("bf16")
            }),
            "NVIDIA RTX 4090 has 24 GB, less than the 52 GB needed at bf16",
        ),
        (
            Box::new(|v| v["variants"][MOE]["capabilities"]["vision"] = json!(true)),
            "vision is true but image input is not listed",
        ),
        (
            Box::new(|v| v["variants"][MOE]["pricing_usd_per_1m_tokens"]["thinking"] = json!(1.0)),
            "a thinking price must be given exactly when",
        ),
        (
            Box::new(|v| v["variants"][DENSE]["capabilities"]["function_calling"] = json!(false)),
            "has function calling benchmarks but not function calling",
        ),
        (
            Box::new(|v| {
                v["variants"][MOE]["pricing_usd_per_1m_tokens"]["cached_input"] = json!(0.6)
            }),
            "cached input ($0.6) costs more than input",
        ),
        (
            Box::new(|v| v["variants"][MOE]["max_output_tokens"] = json!(300000)),
            "output tokens do not fit",
        ),
        (
            Box::new(|v| v["variants"][DENSE]["id"] = json!("google/gemma-4-26b-a4b-it")),
            "appears twice",
        ),
        (
            Box::new(|v| v["family_history"][3]["context_length"] = json!(131072)),
            "gives Gemma 4 a 131072-token context but its longest variant has 262144",
        ),
        (
            Box::new(|v| v["family_history"][3]["thinking"] = json!(false)),
            "says Gemma 4 lacks thinking but the variants say one has it",
        ),
        (
            Box::new(|v| v["family_history"][3]["sizes"] = json!(["27B", "31B"])),
            "lists Gemma 4 sizes",
        ),
        (
            Box::new(|v| v["variants"][MOE]["release"] = json!("2026-05")),
            "released 2026-05 but the family history says Gemma 4 came out in 2026-Q1",
        ),
        (
            Box::new(|v| v["variants"][DENSE]["benchmarks"]["chat"][1]["name"] = json!("MMLU")),
            "benchmark MMLU is scored twice",
        ),
    ];
    for (edit, needle) in cases {
        assert_caught(&problems_after(edit), needle);
    }
}

#[test]
fn parse_lists_every_problem_and_names_the_card() {
    let mut value = data();
    value["variants"][MOE]["architecture"]["active_params_b"] = json!(30);
    value["variants"][DENSE]["memory"][2]["gb"] = json!(9);
    let err = model_cards::parse(&value.to_string()).unwrap_err().to_string();
    assert!(err.starts_with("invalid model card: contradicts itself: "), "{err}");
    assert!(err.contains("exceed the 25.2B total") && err.contains("9 GB at int4"), "{err}");
    let err = model_cards::parse("{\"family\": 4}").unwrap_err().to_string();
    assert!(err.starts_with("invalid model card: does not match the card format"), "{err}");
}

#[test]
fn the_documents_show_the_data() {
    let card = model_cards::gemma4().unwrap();
    let full = model_cards::render::card_markdown(card);
    let overview = model_cards::render::overview_markdown(card);
    for doc in [&full, &overview] {
        assert!(doc.starts_with(model_cards::render::GENERATED));
        for heading in [
            "## Variants",
            "## Mixture-of-Experts vs dense",
            "## The Gemma family",
            "## Benchmarks",
            "## Serving memory",
            "## Pricing",
        ] {
            assert!(doc.contains(heading), "missing {heading}");
        }
        for v in &card.variants {
            for (_, s) in v.benchmarks.all() {
                assert!(doc.contains(&format!("| {} |", s.name)), "{} missing", s.name);
            }
            assert!(doc.contains(&format!("`{}`", v.id)));
        }
        assert!(doc.contains("| 26B-A4B | ~52 GB | ~26 GB | ~14 GB | 16 GB |"));
        assert!(doc.contains("| 31B | $0.75 | $2.25 | $0.375 | $0.75 |"));
        assert!(
            doc.contains("| Gemma 3 | 2025-Q1 | 4B, 12B, 27B | 131,072 (128K) | Yes | No | No |")
        );
        assert!(doc.contains("| Chat | Chatbot Arena Elo | Human preference | 1285 | 1342 | +57 |"));
    }
    assert!(full.contains("| MATH | 42.1 | 52.8 (+10.7) | 67.4 (+25.3) |"));
    assert!(full.contains("26B-A4B at int4: The source card says ~7 GB"));
    // Rendering is deterministic, so the staleness check can compare bytes.
    assert_eq!(full, model_cards::render::card_markdown(card));
}
