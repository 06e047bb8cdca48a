//! `seed models …`: every command and every routing rule, run through
//! `ModelsCommand::run` into a `Vec<u8>` and parsed the way the `seed` binary
//! parses them.

use clap::{CommandFactory, Parser};
use model_cards::cli::{exit_code, Exit, ModelsCommand};
use model_cards::Card;
use serde_json::Value;

/// The shape the `seed` binary mounts the subcommand in.
#[derive(Debug, Parser)]
#[command(name = "seed")]
enum Seed {
    /// The model cards
    Models {
        #[command(subcommand)]
        cmd: ModelsCommand,
    },
}

/// What one command printed and the exit status the binary would give.
struct Outcome {
    code: u8,
    out: String,
    error: Option<String>,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.out))
    }
}

fn parse(args: &str) -> ModelsCommand {
    let argv =
        std::iter::once("seed").chain(std::iter::once("models")).chain(args.split_whitespace());
    match Seed::try_parse_from(argv) {
        Ok(Seed::Models { cmd }) => cmd,
        Err(e) => panic!("`seed models {args}` did not parse: {e}"),
    }
}

fn run_on(card: &Card, args: &str) -> Outcome {
    let mut out = Vec::new();
    let result = parse(args).run_on(card, &mut out);
    Outcome {
        code: exit_code(&result),
        out: String::from_utf8(out).expect("UTF-8 output"),
        error: result.err().map(|e| e.to_string()),
    }
}

fn run(args: &str) -> Outcome {
    run_on(model_cards::gemma4().unwrap(), args)
}

fn ok(args: &str) -> Outcome {
    let o = run(args);
    assert_eq!((o.code, &o.error), (0, &None), "`seed models {args}`:\n{}", o.out);
    o
}

const MOE: &str = "google/gemma-4-26b-a4b-it";
const DENSE: &str = "google/gemma-4-31b-it";

#[test]
fn list_prints_every_model() {
    let o = ok("list");
    let lines: Vec<&str> = o.out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", o.out);
    assert!(lines[0].starts_with("ID") && lines[0].contains("CONTEXT"));
    assert!(
        lines[1].starts_with(MOE) && lines[1].contains("MoE") && lines[1].contains("25.2B (3.8B)")
    );
    assert!(
        lines[2].starts_with(DENSE) && lines[2].contains("dense") && lines[2].contains("$0.75")
    );
}

#[test]
fn list_json_is_an_array_of_summaries() {
    let v = ok("list --json").json();
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [MOE, DENSE]);
    assert_eq!(v[0]["architecture"]["active_params_b"], 3.8);
    assert_eq!(v[1]["capabilities"]["vision"], true);
    assert_eq!(v[0]["context_length"], 262_144);
}

#[test]
fn show_prints_the_card_entry() {
    let o = ok(&format!("show {MOE}"));
    assert!(o.out.starts_with("Gemma 4 26B-A4B (google/gemma-4-26b-a4b-it)\n"), "{}", o.out);
    for needle in [
        "25.2B total, 3.8B active per token",
        "top-2",
        "262,144 (256K) tokens",
        "int4 ~14 GB",
        "Note on int4 memory",
        "MMLU",
        "82.3",
        "Good for:",
        "Limitations:",
    ] {
        assert!(o.out.contains(needle), "missing {needle:?} in\n{}", o.out);
    }
    // The short id works too.
    assert_eq!(ok("show gemma-4-26b-a4b-it").out, o.out);
}

#[test]
fn show_json_is_exactly_the_data() {
    let v = ok(&format!("show {DENSE} --json")).json();
    let data: Value = serde_json::from_str(model_cards::GEMMA_4_JSON).unwrap();
    let entry = &data["variants"][1];
    assert_eq!(entry["id"], DENSE);
    assert_eq!(v["benchmarks"], entry["benchmarks"]);
    assert_eq!(v["capabilities"], entry["capabilities"]);
    assert_eq!(v["pricing_usd_per_1m_tokens"], entry["pricing_usd_per_1m_tokens"]);
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        entry.as_object().unwrap().keys().collect::<Vec<_>>()
    );
}

#[test]
fn compare_puts_scores_side_by_side_with_the_difference() {
    let o = ok(&format!("compare {MOE} {DENSE}"));
    let row = |name: &str| {
        o.out
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == name))
            .unwrap_or_else(|| panic!("no {name} row in\n{}", o.out))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("MMLU")[1..], ["MMLU", "82.3", "86.7", "+4.4"]);
    assert_eq!(row("MATH")[1..], ["MATH", "52.8", "67.4", "+14.6"]);
    assert_eq!(row("MT-Bench")[1..], ["MT-Bench", "8.9", "9.4", "+0.5"]);
    assert_eq!(row("Elo")[3..], ["Elo", "1285", "1342", "+57"]);
    assert_eq!(row("DocVQA")[1..], ["DocVQA", "—", "91.3", "—"]);
    assert!(o.out.contains(&format!("DIFFERENCE is {DENSE} minus {MOE}")));
    // The other way round, the differences change sign.
    let back = ok(&format!("compare {DENSE} {MOE}"));
    assert!(
        back.out.lines().any(|l| l.contains("MMLU") && l.trim_end().ends_with("-4.4")),
        "{}",
        back.out
    );
}

#[test]
fn unknown_model_ids_are_invalid_input_naming_the_valid_ones() {
    for args in [
        "show gemma-5",
        "show gemma-5 --json",
        &format!("compare {MOE} gemma-5"),
        &format!("compare gemma-5 {MOE}"),
    ] {
        let o = run(args);
        assert_eq!(o.code, 2, "{args}");
        assert!(o.out.is_empty(), "{args}: nothing is printed on invalid input, got {}", o.out);
        let err = o.error.unwrap();
        assert_eq!(
            err,
            format!("invalid model id: \"gemma-5\" is not on the cards; valid ids: {MOE}, {DENSE}"),
            "{args}"
        );
    }
}

fn picked(args: &str) -> (String, Vec<String>) {
    let v = ok(&format!("pick {args} --json")).json();
    let reasons =
        v["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    (v["model"].as_str().unwrap().to_string(), reasons)
}

#[test]
fn each_capability_routes_to_the_variant_that_has_it() {
    for need in ["vision", "tools", "function_calling", "thinking", "vision,tools,thinking"] {
        let (model, reasons) = picked(&format!("--needs {need}"));
        assert_eq!(model, DENSE, "--needs {need}");
        assert!(reasons[0].contains(&format!("{DENSE} has it, {MOE} does not")), "{reasons:?}");
    }
    // Even when the preference alone would take the other one.
    assert_eq!(picked("--needs vision --prefer latency").0, DENSE);
    assert_eq!(picked("--needs thinking --prefer cost").0, DENSE);
}

#[test]
fn without_needs_cost_and_latency_take_the_sparse_model_and_quality_the_dense_one() {
    let (model, reasons) = picked("");
    assert_eq!(model, MOE, "cost is the default");
    assert_eq!(reasons, [format!("prefer cost: {MOE} has $2.00 per 1M input + 1M output tokens, against $3.00 for {DENSE}")]);
    let (model, reasons) = picked("--prefer latency");
    assert_eq!(model, MOE);
    assert_eq!(
        reasons,
        [format!(
            "prefer latency: {MOE} has 3.8B active parameters per token, against 30.7B for {DENSE}"
        )]
    );
    let (model, reasons) = picked("--prefer quality");
    assert_eq!(model, DENSE);
    assert!(
        reasons[0].contains("a mean score of 79.9 over the 10 percent-scale benchmarks"),
        "{reasons:?}"
    );
    assert!(reasons[0].contains(&format!("against 73.9 for {MOE}")), "{reasons:?}");
}

#[test]
fn min_context_keeps_the_long_enough_models() {
    let (model, reasons) = picked("--min-context 262144");
    assert_eq!(model, MOE);
    assert_eq!(reasons[0], "needs a context of at least 262,144 tokens: every model left has it");
}

#[test]
fn no_model_fits_a_context_too_long_exit_1_naming_the_need() {
    let o = run("pick --min-context 262145");
    assert_eq!((o.code, &o.error), (1, &None));
    assert!(o.out.starts_with("no model fits: the need min-context failed\n"), "{}", o.out);
    assert!(
        o.out.contains("at least 262,145 tokens: no model left has it (the longest is 262,144)"),
        "{}",
        o.out
    );

    let o = run("pick --needs vision --min-context 1000000 --json");
    assert_eq!(o.code, 1);
    let v = o.json();
    assert_eq!(v["model"], Value::Null);
    assert_eq!(v["failed_need"], "min-context");
    assert_eq!(v["reasons"].as_array().unwrap().len(), 2, "the vision step, then the failure: {v}");
}

/// The card with one capability taken away from the dense variant (and its benchmarks, so it stays consistent).
fn card_without(capability: &str) -> Card {
    let mut card = model_cards::gemma4().unwrap().clone();
    let dense = card.variants.iter_mut().find(|v| v.id == DENSE).unwrap();
    match capability {
        "vision" => {
            dense.capabilities.vision = false;
            dense.modalities.input.retain(|m| m != "image");
            dense.benchmarks.vision = None;
        }
        "function_calling" => {
            dense.capabilities.function_calling = false;
            dense.benchmarks.function_calling = None;
        }
        "thinking" => {
            dense.capabilities.thinking = false;
            dense.pricing_usd_per_1m_tokens.thinking = None;
            dense.benchmarks.reasoning_with_thinking = None;
        }
        other => panic!("no capability {other}"),
    }
    for g in card.family_history.iter_mut().filter(|g| g.generation == "Gemma 4") {
        g.vision &= capability != "vision";
        g.function_calling &= capability != "function_calling";
        g.thinking &= capability != "thinking";
    }
    assert_eq!(card.check(), Vec::<String>::new(), "the altered card must stay consistent");
    card
}

#[test]
fn no_model_fits_a_missing_capability_exit_1_naming_it() {
    for (capability, need) in
        [("vision", "vision"), ("function_calling", "tools"), ("thinking", "thinking")]
    {
        let card = card_without(capability);
        let o = run_on(&card, &format!("pick --needs {need}"));
        assert_eq!((o.code, &o.error), (1, &None), "{need}");
        assert!(
            o.out.starts_with(&format!("no model fits: the need {need} failed\n")),
            "{}",
            o.out
        );
        assert!(
            o.out.contains(&format!("no model left has it ({MOE}, {DENSE} do not)")),
            "{}",
            o.out
        );

        let o = run_on(&card, &format!("pick --needs {need} --json"));
        assert_eq!(o.code, 1);
        assert_eq!(o.json()["failed_need"], need);
    }
    // The first need that fails is the one named, after the ones that narrowed.
    let card = card_without("thinking");
    let v = run_on(&card, "pick --needs vision,thinking,tools --json").json();
    assert_eq!(v["failed_need"], "thinking");
    assert_eq!(v["reasons"].as_array().unwrap().len(), 2);
}

#[test]
fn unknown_needs_are_invalid_input_listing_the_valid_ones() {
    for args in ["pick --needs audio", "pick --needs vision,audio --json"] {
        let o = run(args);
        assert_eq!(o.code, 2, "{args}");
        assert!(o.out.is_empty());
        assert_eq!(
            o.error.as_deref(),
            Some("invalid need: \"audio\" is not a need; valid needs: vision, tools (or function_calling), thinking")
        );
    }
}

#[test]
fn repeated_and_empty_needs_are_harmless() {
    assert_eq!(picked("--needs vision,vision,"), picked("--needs vision"));
}

#[test]
fn bad_flag_values_are_usage_errors_with_status_2() {
    for (args, needle) in [
        ("pick --prefer fast", "[possible values: cost, quality, latency]"),
        ("pick --min-context lots", "invalid value 'lots'"),
        ("pick --min-context -5", "unexpected argument '-5'"),
        ("show", "<ID>"),
        ("compare one", "<B>"),
    ] {
        let argv = ["seed", "models"].into_iter().chain(args.split_whitespace());
        let err = Seed::try_parse_from(argv).expect_err(args);
        assert_eq!(err.exit_code(), 2, "{args}");
        assert!(err.to_string().contains(needle), "{args}: {err}");
    }
}

#[test]
fn every_command_shows_an_example_in_its_help() {
    let mut seed = Seed::command();
    let models = seed.find_subcommand_mut("models").unwrap();
    for name in ["list", "show", "compare", "pick"] {
        let help = models.find_subcommand_mut(name).unwrap().render_long_help().to_string();
        assert!(
            help.contains(&format!("seed models {name}")),
            "{name} --help has no example:\n{help}"
        );
    }
    seed.debug_assert();
}

#[test]
fn a_failing_writer_is_an_io_error_with_status_1() {
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let result = parse("list").run(&mut Broken);
    let err = result.as_ref().unwrap_err();
    assert_eq!(err.kind(), seed_event::ErrorKind::Io);
    assert!(err.to_string().starts_with("writing the output of seed models: closed"), "{err}");
    assert_eq!(exit_code(&result), 1);
    assert_eq!(Exit::Success.code(), 0);
    assert_eq!(Exit::NoFit.code(), 1);
}
