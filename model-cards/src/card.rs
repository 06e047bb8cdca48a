//! The card's data types, read from and written to the JSON of `gemma-4.json`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One model family's card: the whole of `gemma-4.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// Version of the card's content, e.g. `2.0`.
    pub card_version: String,
    /// The family's name, e.g. `Gemma 4`.
    pub family: String,
    /// Who publishes the models.
    pub vendor: String,
    /// When the card's content last changed (`YYYY-MM-DD`).
    pub last_updated: String,
    /// What the family is, in a few sentences.
    pub summary: String,
    /// The models of the family.
    pub variants: Vec<Variant>,
    /// Limitations every variant shares.
    pub shared_limitations: Vec<String>,
    /// The family's generations, oldest first; the last one is this family.
    pub family_history: Vec<Generation>,
    /// Scores against the previous generation's largest model.
    pub gemma_3_comparison: Comparison,
    /// How contradictions in the source material were resolved.
    pub source_notes: Vec<String>,
}

/// One model of the family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The model id, e.g. `google/gemma-4-31b-it`.
    pub id: String,
    /// The display name, e.g. `Gemma 4 31B`.
    pub name: String,
    /// The size as the family history writes it, e.g. `26B-A4B`.
    pub size_label: String,
    /// What it is, in a sentence or two.
    pub summary: String,
    /// Dense or Mixture-of-Experts, and parameter counts.
    pub architecture: Architecture,
    /// The context window, in tokens.
    pub context_length: u64,
    /// The most tokens one answer may have.
    pub max_output_tokens: u64,
    /// What it reads and writes.
    pub modalities: Modalities,
    /// Vision, function calling, thinking.
    pub capabilities: Capabilities,
    /// Languages it supports.
    pub languages: Languages,
    /// SPDX license id of the weights.
    pub license: String,
    /// Release month (`YYYY-MM`).
    pub release: String,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The chat template and stop sequences.
    pub chat_format: ChatFormat,
    /// Estimated prices in USD per million tokens.
    pub pricing_usd_per_1m_tokens: Pricing,
    /// Memory needed to serve it, per precision.
    pub memory: Vec<Memory>,
    /// The least GPU memory that can serve it at all (at the smallest precision).
    #[serde(serialize_with = "whole_as_integer")]
    pub minimum_vram_gb: f64,
    /// GPUs that can serve it, each with the precision it fits.
    pub recommended_hardware: Vec<Hardware>,
    /// Benchmark scores by category.
    pub benchmarks: Benchmarks,
    /// What it is good for.
    pub intended_uses: Vec<String>,
    /// What it is not good at, beyond [`Card::shared_limitations`].
    pub limitations: Vec<String>,
}

/// Dense or Mixture-of-Experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchitectureKind {
    /// Every parameter works on every token.
    Dense,
    /// A router picks a few experts per token.
    Moe,
}

impl fmt::Display for ArchitectureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArchitectureKind::Dense => "Dense transformer",
            ArchitectureKind::Moe => "Mixture-of-Experts",
        })
    }
}

/// The architecture and parameter counts of a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Dense or MoE.
    pub kind: ArchitectureKind,
    /// All parameters, in billions.
    pub total_params_b: f64,
    /// Parameters used per token, in billions.
    pub active_params_b: f64,
    /// Expert routing, for MoE variants, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts: Option<Experts>,
}

/// How a Mixture-of-Experts variant routes tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experts {
    /// How many experts there are, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// How many experts each token is routed to, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_top_k: Option<u32>,
}

/// Input and output modalities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modalities {
    /// What it reads, e.g. `text`, `image`.
    pub input: Vec<String>,
    /// What it writes.
    pub output: Vec<String>,
}

/// The capabilities routing cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Reads images.
    pub vision: bool,
    /// Calls functions (tools) natively.
    pub function_calling: bool,
    /// Has a thinking (step-by-step reasoning) mode.
    pub thinking: bool,
}

/// Language support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Languages {
    /// How many, as the source says it, e.g. `140+`.
    pub supported: String,
    /// The languages training focused on.
    pub primary: Vec<String>,
}

/// The tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokenizer {
    /// e.g. `SentencePiece`.
    pub kind: String,
    /// Vocabulary size as the source gives it, e.g. `256K`.
    pub vocabulary: String,
}

/// The chat template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatFormat {
    /// The marker that opens a turn.
    pub turn_start: String,
    /// The marker that closes a turn.
    pub turn_end: String,
    /// The role names written after `turn_start`.
    pub roles: Vec<String>,
    /// A one-message prompt, with `{message}` for the user's text.
    pub template: String,
    /// Sequences that end generation.
    pub stop_sequences: Vec<String>,
}

/// Estimated prices in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Prompt tokens.
    pub input: f64,
    /// Generated tokens.
    pub output: f64,
    /// Prompt tokens served from a cache.
    pub cached_input: f64,
    /// Thinking tokens, for variants with a thinking mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<f64>,
}

impl Pricing {
    /// The price of one million input plus one million output tokens: what `pick --prefer cost` compares.
    pub fn blended(&self) -> f64 {
        self.input + self.output
    }
}

/// A numeric precision weights can be served at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 16-bit (bf16 or fp16): 2 bytes per parameter.
    Bf16,
    /// 8-bit integers: 1 byte per parameter.
    Int8,
    /// 4-bit integers: half a byte per parameter.
    Int4,
}

impl Precision {
    /// Every precision, widest first.
    pub const ALL: [Precision; 3] = [Precision::Bf16, Precision::Int8, Precision::Int4];

    /// Bytes one parameter takes at this precision.
    pub fn bytes_per_param(self) -> f64 {
        match self {
            Precision::Bf16 => 2.0,
            Precision::Int8 => 1.0,
            Precision::Int4 => 0.5,
        }
    }

    /// The name in the JSON, e.g. `int4`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
        }
    }

    /// The name in tables, e.g. `bf16 / fp16`.
    pub fn label(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16 / fp16",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
        }
    }
}

/// Memory needed to serve a variant at one precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// The precision.
    pub precision: Precision,
    /// Approximate GPU memory in GB (10^9 bytes).
    #[serde(serialize_with = "whole_as_integer")]
    pub gb: f64,
    /// Why this figure, where the source disagreed with itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A GPU that can serve a variant at a precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    /// The GPU, e.g. `NVIDIA H100 80GB`.
    pub gpu: String,
    /// Its memory in GB.
    #[serde(serialize_with = "whole_as_integer")]
    pub vram_gb: f64,
    /// The widest precision the variant fits in it at.
    pub precision: Precision,
}

/// What a benchmark score is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// 0 to 100.
    Percent,
    /// 0 to 10 (MT-Bench).
    #[serde(rename = "out_of_10")]
    OutOf10,
    /// An Elo rating.
    Elo,
}

/// One benchmark result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Score {
    /// The benchmark, e.g. `MMLU`.
    pub name: String,
    /// The score.
    #[serde(serialize_with = "whole_as_integer")]
    pub score: f64,
    /// What the score is measured in.
    pub unit: Unit,
    /// What the benchmark measures.
    pub measures: String,
}

/// A benchmark category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Knowledge, reasoning, commonsense, factuality.
    General,
    /// Writing code.
    Coding,
    /// Math word problems and competition math.
    Math,
    /// Conversation quality.
    Chat,
    /// Other languages than English.
    Multilingual,
    /// Images.
    Vision,
    /// Calling tools.
    FunctionCalling,
    /// Reasoning with thinking mode on.
    ReasoningWithThinking,
}

impl Category {
    /// Every category, in the card's order.
    pub const ALL: [Category; 8] = [
        Category::General,
        Category::Coding,
        Category::Math,
        Category::Chat,
        Category::Multilingual,
        Category::Vision,
        Category::FunctionCalling,
        Category::ReasoningWithThinking,
    ];

    /// The title in tables, e.g. `Function calling`.
    pub fn title(self) -> &'static str {
        match self {
            Category::General => "General",
            Category::Coding => "Coding",
            Category::Math => "Math",
            Category::Chat => "Chat",
            Category::Multilingual => "Multilingual",
            Category::Vision => "Vision",
            Category::FunctionCalling => "Function calling",
            Category::ReasoningWithThinking => "Reasoning with thinking",
        }
    }
}

/// Benchmark scores by category; a category a variant was not tested on is absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Benchmarks {
    /// General knowledge and reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub general: Option<Vec<Score>>,
    /// Coding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coding: Option<Vec<Score>>,
    /// Math.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub math: Option<Vec<Score>>,
    /// Chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<Vec<Score>>,
    /// Multilingual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multilingual: Option<Vec<Score>>,
    /// Vision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<Vec<Score>>,
    /// Function calling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_calling: Option<Vec<Score>>,
    /// Reasoning with thinking mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_with_thinking: Option<Vec<Score>>,
}

impl Benchmarks {
    /// The scores of one category (empty when absent).
    pub fn get(&self, category: Category) -> &[Score] {
        let scores = match category {
            Category::General => &self.general,
            Category::Coding => &self.coding,
            Category::Math => &self.math,
            Category::Chat => &self.chat,
            Category::Multilingual => &self.multilingual,
            Category::Vision => &self.vision,
            Category::FunctionCalling => &self.function_calling,
            Category::ReasoningWithThinking => &self.reasoning_with_thinking,
        };
        scores.as_deref().unwrap_or(&[])
    }

    /// Every score with its category, in the card's order.
    pub fn all(&self) -> impl Iterator<Item = (Category, &Score)> {
        Category::ALL.into_iter().flat_map(move |c| self.get(c).iter().map(move |s| (c, s)))
    }

    /// The score of the benchmark called `name`.
    pub fn find(&self, name: &str) -> Option<&Score> {
        self.all().map(|(_, s)| s).find(|s| s.name == name)
    }
}

/// One generation of the family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// e.g. `Gemma 3`.
    pub generation: String,
    /// Release quarter (`YYYY-Qn`).
    pub release: String,
    /// Size labels of its models.
    pub sizes: Vec<String>,
    /// The longest context of its models, in tokens.
    pub context_length: u64,
    /// Whether any model reads images.
    pub vision: bool,
    /// Whether any model has a thinking mode.
    pub thinking: bool,
    /// Whether any model calls tools natively.
    pub function_calling: bool,
}

/// Scores of a previous model and how much each variant improves on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The previous model, e.g. `Gemma 3 27B`.
    pub baseline: String,
    /// Its scores by benchmark name.
    pub baseline_scores: OrderedMap<f64>,
    /// Per variant id: its score minus the baseline's, by benchmark name.
    pub improvements: OrderedMap<OrderedMap<f64>>,
}

/// Writes a whole number without a fraction (`1342`, not `1342.0`), as the card's JSON does.
fn whole_as_integer<S: serde::Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        s.serialize_i64(*value as i64)
    } else {
        s.serialize_f64(*value)
    }
}

/// A JSON object read into a list of pairs, keeping the order it was written in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> OrderedMap<V> {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut pairs: Vec<(String, V)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if pairs.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    pairs.push((key, value));
                }
                Ok(OrderedMap(pairs))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

impl Card {
    /// The variant with this id; the part after `/` alone (`gemma-4-31b-it`) is accepted too.
    pub fn variant(&self, id: &str) -> Option<&Variant> {
        self.variants
            .iter()
            .find(|v| v.id == id)
            .or_else(|| self.variants.iter().find(|v| v.id.rsplit('/').next() == Some(id)))
    }

    /// The variant ids, comma-separated, for error messages.
    pub fn ids(&self) -> String {
        self.variants.iter().map(|v| v.id.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl Variant {
    /// Memory at `precision`, if the card gives it.
    pub fn memory_at(&self, precision: Precision) -> Option<&Memory> {
        self.memory.iter().find(|m| m.precision == precision)
    }

    /// The mean of the percent-scale scores of the named benchmarks this variant has.
    pub fn mean_percent(&self, names: &[&str]) -> Option<f64> {
        let scores: Vec<f64> = names
            .iter()
            .filter_map(|n| self.benchmarks.find(n))
            .filter(|s| s.unit == Unit::Percent)
            .map(|s| s.score)
            .collect();
        (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
    }
}
