//! The JSON Schema in `schema/state.json` is the contract: every state the
//! crate writes validates against it, and every document it rejects is
//! rejected by `State::from_json` too, with an error naming the field.

use jsonschema::Validator;
use seed_event::{Error, JsonObject, Timestamp};
use seed_state::{Change, NewState, State, Status, FIELDS, SCHEMA};
use serde_json::{json, Value};

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("schema/state.json is JSON")
}

/// The schema with format assertions on, as a strict validator in another language would run it.
fn validator() -> Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .expect("schema/state.json compiles")
}

fn obj(v: Value) -> JsonObject {
    v.as_object().cloned().expect("an object")
}

fn schema_errors(validator: &Validator, doc: &Value) -> Vec<String> {
    validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// The field a `from_json` error names, or `None` when it accepted the document.
fn rejected_field(doc: &Value) -> Option<String> {
    match State::from_json(&doc.to_string()) {
        Ok(_) => None,
        Err(Error::InvalidInput { what, .. }) => Some(what),
        Err(other) => panic!("{doc}: expected an InvalidInput error, got {other:?}"),
    }
}

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    let schema = schema();
    jsonschema::draft202012::meta::validate(&schema)
        .expect("valid against the 2020-12 meta-schema");
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let required: Vec<&str> =
        schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, FIELDS, "the schema requires exactly the fields the crate writes");
    let statuses: Vec<&str> = schema["properties"]["status"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(statuses, Status::ALL.map(Status::as_str));
}

/// States made by every path the crate offers: every first status, every allowed
/// move, every kind of data change, odd but valid names and data.
fn states_the_crate_writes() -> Vec<State> {
    let names = [
        ("task-42", "task", "fenrir"),
        ("archon/odin.main", "archon", "scheduler_1"),
        ("タスク", "tâche", "ödin"),
        (&*"x".repeat(255), &*"é".repeat(255), &*"s".repeat(255)),
    ];
    let datas = [
        json!({}),
        json!({"title": "index", "n": 3, "ok": true, "none": null}),
        json!({"nested": {"list": [1, 2.5, "three", {"deep": []}]}, "emoji": "🌱"}),
    ];
    let start = Timestamp::parse("2026-04-16T12:00:00.123456+00:00").unwrap();
    let mut states = Vec::new();
    for (i, (id, ty, by)) in names.iter().enumerate() {
        for (j, data) in datas.iter().enumerate() {
            for first in Status::ALL {
                let new = NewState::new(*id, *ty, *by)
                    .status(first)
                    .data(obj(data.clone()))
                    .metadata(obj(json!({"i": i, "j": j})));
                let created = State::create_at(new, start.add_micros(i as i64)).unwrap();
                states.push(created.clone());
                // Every move the life cycle allows from here, then one of each data change.
                for next in first.successors() {
                    let moved = created.update(Change::by("mover").status(next)).unwrap();
                    states.push(moved.clone());
                    if next != Status::Archived {
                        let patch = obj(json!({"title": null, "step": {"k": j}}));
                        states.push(moved.update(Change::by("patcher").merge_data(patch)).unwrap());
                        let data = obj(json!({"replaced": [i, j]}));
                        states.push(moved.update(Change::by("r").replace_data(data)).unwrap());
                        let meta = obj(json!({"trace": "abc"}));
                        states.push(moved.update(Change::by("m").metadata(meta)).unwrap());
                    }
                }
            }
        }
    }
    // A long history: version numbers well past 1.
    let mut long = State::create(NewState::new("loop", "task", "f")).unwrap();
    for k in 0..200 {
        long = long.update(Change::by("f").merge_data(obj(json!({"k": k})))).unwrap();
    }
    assert_eq!(long.version(), 201);
    states.push(long);
    states
}

#[test]
fn every_state_the_crate_writes_validates_and_round_trips() {
    let validator = validator();
    let states = states_the_crate_writes();
    assert!(states.len() > 300, "only {} states generated", states.len());
    for state in &states {
        let line = state.to_json();
        let doc: Value = serde_json::from_str(&line).unwrap();
        let errors = schema_errors(&validator, &doc);
        assert!(errors.is_empty(), "{line}\nrejected by the schema: {errors:?}");
        assert_eq!(&State::from_json(&line).unwrap(), state, "round trip of {line}");
    }
}

fn base() -> Value {
    json!({
        "entity_id": "task-42",
        "entity_type": "task",
        "version": 1,
        "status": "pending",
        "data": {"title": "index"},
        "created_at": "2026-04-16T12:00:00.000000+00:00",
        "updated_at": "2026-04-16T12:00:00.000000+00:00",
        "updated_by": "fenrir",
        "metadata": {}
    })
}

fn with(field: &str, value: Value) -> Value {
    let mut doc = base();
    doc[field] = value;
    doc
}

fn without(field: &str) -> Value {
    let mut doc = base();
    doc.as_object_mut().unwrap().remove(field);
    doc
}

#[test]
fn documents_the_schema_rejects_are_rejected_naming_the_field() {
    let validator = validator();
    assert!(validator.is_valid(&base()), "{:?}", schema_errors(&validator, &base()));
    assert_eq!(rejected_field(&base()), None);

    let mut cases: Vec<(&str, Value, &str)> = vec![
        ("version 0", with("version", json!(0)), "version"),
        ("negative version", with("version", json!(-3)), "version"),
        ("fractional version", with("version", json!(1.5)), "version"),
        ("version as text", with("version", json!("1")), "version"),
        ("version past 2^53-1", with("version", json!(9_007_199_254_740_992u64)), "version"),
        ("unknown status", with("status", json!("done")), "status"),
        ("status in capitals", with("status", json!("Active")), "status"),
        ("status not a string", with("status", json!(1)), "status"),
        ("data an array", with("data", json!([1, 2])), "data"),
        ("data a string", with("data", json!("{}")), "data"),
        ("data null", with("data", Value::Null), "data"),
        ("metadata a number", with("metadata", json!(3)), "metadata"),
        ("entity_id a number", with("entity_id", json!(42)), "entity_id"),
        ("empty entity_id", with("entity_id", json!("")), "entity_id"),
        ("entity_id with a space", with("entity_id", json!("task 42")), "entity_id"),
        ("entity_id too long", with("entity_id", json!("x".repeat(256))), "entity_id"),
        ("entity_type null", with("entity_type", Value::Null), "entity_type"),
        ("entity_type with a control", with("entity_type", json!("t\u{1}")), "entity_type"),
        ("updated_by a list", with("updated_by", json!(["a"])), "updated_by"),
        ("updated_by with a newline", with("updated_by", json!("a\nb")), "updated_by"),
        ("created_at in words", with("created_at", json!("yesterday")), "created_at"),
        ("created_at a date only", with("created_at", json!("2026-04-16")), "created_at"),
        ("created_at month 13", with("created_at", json!("2026-13-01T00:00:00Z")), "created_at"),
        ("created_at day 32", with("created_at", json!("2026-01-32T00:00:00Z")), "created_at"),
        (
            "created_at without offset",
            with("created_at", json!("2026-04-16T12:00:00")),
            "created_at",
        ),
        ("created_at a number", with("created_at", json!(1_776_340_800)), "created_at"),
        (
            "updated_at with a space",
            with("updated_at", json!("2026-04-16 12:00:00Z")),
            "updated_at",
        ),
        ("updated_at padded", with("updated_at", json!(" 2026-04-16T12:00:00Z")), "updated_at"),
        ("updated_at hour 25", with("updated_at", json!("2026-04-16T25:00:00Z")), "updated_at"),
    ];
    for field in FIELDS {
        cases.push(("missing field", without(field), field));
    }
    for (what, doc, field) in &cases {
        assert!(!validator.is_valid(doc), "{what}: the schema accepted {doc}");
        assert_eq!(rejected_field(doc).as_deref(), Some(*field), "{what}: {doc}");
    }
    for not_an_object in [json!([]), json!("state"), json!(null), json!(1)] {
        assert!(!validator.is_valid(&not_an_object));
        assert_eq!(rejected_field(&not_an_object).as_deref(), Some("state"));
    }
    let err = State::from_json("{not json").unwrap_err();
    assert!(err.to_string().starts_with("invalid state: not valid JSON"), "{err}");
}

/// Every field crossed with values of every JSON type: whatever the schema
/// rejects, `from_json` rejects naming that field, and whatever the schema
/// accepts, `from_json` accepts (but for the one rule beyond the schema).
#[test]
fn from_json_agrees_with_the_schema_field_by_field() {
    let validator = validator();
    let candidates = [
        Value::Null,
        json!(true),
        json!(0),
        json!(1),
        json!(-1),
        json!(2.0),
        json!(1.5),
        json!(9_007_199_254_740_991u64),
        json!(9_007_199_254_740_992u64),
        json!(""),
        json!(" "),
        json!("x"),
        json!("a b"),
        json!("tab\there"),
        json!("\u{7f}"),
        json!("\u{85}"),
        json!("\u{a0}"),
        json!("\u{feff}"),
        json!("x".repeat(255)),
        json!("x".repeat(256)),
        json!("é".repeat(255)),
        json!("pending"),
        json!("archived"),
        json!("Pending"),
        json!("2026-04-16T12:00:00Z"),
        json!("2026-04-16T11:00:00.5-01:00"),
        json!("2026-04-16T12:00:00.123456789+00:00"),
        json!("2026-04-16T12:00:00.1234567891+00:00"),
        json!("2026-04-16T12:00:00.000000+00:00"),
        json!("2025-01-01T00:00:00Z"),
        json!("2026-13-01T00:00:00Z"),
        json!("2026-04-16"),
        json!([]),
        json!({}),
        json!({"a": [1, {"b": null}]}),
    ];
    let mut checked = 0;
    for field in FIELDS {
        for value in &candidates {
            let doc = with(field, value.clone());
            let schema_ok = validator.is_valid(&doc);
            let result = State::from_json(&doc.to_string());
            match (schema_ok, result) {
                (true, Ok(_)) => {}
                (false, Err(Error::InvalidInput { what, .. })) => {
                    assert_eq!(what, field, "{doc}");
                }
                // The one rule beyond JSON Schema: a last update before the creation.
                (true, Err(Error::InvalidInput { what, reason }))
                    if field.ends_with("_at") && what == "updated_at" =>
                {
                    assert!(reason.contains("before created_at"), "{reason}");
                }
                (schema_ok, result) => {
                    panic!("{doc}: schema valid = {schema_ok}, from_json = {result:?}")
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, FIELDS.len() * candidates.len());
}

#[test]
fn unknown_fields_are_allowed_by_both() {
    let validator = validator();
    let doc = with("seq", json!(7));
    assert!(validator.is_valid(&doc));
    assert_eq!(rejected_field(&doc), None);
}
