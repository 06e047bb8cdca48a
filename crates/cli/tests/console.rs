//! The web console in a real headless browser: Debian's chromium driven over
//! WebDriver (chromedriver, plain HTTP and JSON), against a real `seed serve`.
//! `cargo xtask test` installs both; without them this test fails and says so.

mod serve_util;
mod util;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use base64::Engine as _;
use serde_json::{json, Value};
use serve_util::{wait_until, Served};
use util::Dir;

/// A chromedriver process and one browser session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

impl Browser {
    fn start(width: u32, height: u32) -> Browser {
        let missing = || {
            panic!(
                "chromium and chromedriver are needed for the console test and are not installed; \
                 run `cargo xtask test`, which installs Debian's chromium and chromium-driver"
            )
        };
        let chromium = find("chromium").unwrap_or_else(missing);
        let chromedriver = find("chromedriver").unwrap_or_else(missing);
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(util::DEADLINE))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { driver, base, session: String::new(), agent };
        wait_until("chromedriver", || {
            browser.agent.get(format!("{}/status", browser.base)).call().is_ok()
        });
        let session = browser.send(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             format!("--window-size={width},{height}"), "--hide-scrollbars"],
                },
                "goog:loggingPrefs": {"browser": "ALL"},
            }}}),
        );
        browser.session = session["sessionId"].as_str().expect("a session id").to_string();
        browser
    }

    /// One WebDriver command; returns its `value`.
    fn send(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.to_string().as_bytes()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().with_config().limit(1 << 30).read_to_string().expect("body");
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: {text}"));
        assert!(status < 400, "{method} {path}: {status} {text:.500}");
        value["value"].clone()
    }

    fn session(&self, method: &str, path: &str, body: Value) -> Value {
        self.send(method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.session("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page and returns its result.
    fn eval(&self, script: &str) -> Value {
        self.session("POST", "/execute/sync", json!({ "script": script, "args": [] }))
    }

    fn element(&self, css: &str) -> String {
        let found =
            self.session("POST", "/element", json!({"using": "css selector", "value": css}));
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("element id")
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session("POST", &format!("/element/{id}/clear"), json!({}));
        self.session("POST", &format!("/element/{id}/value"), json!({ "text": text }));
    }

    /// Clicks `css` after scrolling it to the middle of the window, where the
    /// sticky header cannot cover it.
    fn click(&self, css: &str) {
        let id = self.element(css);
        self.eval(&format!(
            "document.querySelector({css:?}).scrollIntoView({{block: 'center'}}); return null;"
        ));
        self.session("POST", &format!("/element/{id}/click"), json!({}));
    }

    fn text(&self, css: &str) -> String {
        let script =
            format!("const e = document.querySelector({css:?}); return e ? e.textContent : null;");
        self.eval(&script).as_str().unwrap_or_default().to_string()
    }

    /// The browser console's entries so far.
    fn logs(&self) -> Vec<Value> {
        self.session("POST", "/se/log", json!({"type": "browser"}))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.session("GET", "/screenshot", json!({}));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("PNG");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .join("console");
        std::fs::create_dir_all(&dir).expect("target/console");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.agent.delete(format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_console_shows_live_events_and_publishes_in_a_real_browser() {
    let dir = Dir::new();
    let s = Served::start(&dir, &[]);
    for (topic, n) in [("orders.created", 1), ("orders.paid", 2), ("task.completed", 3)] {
        s.publish(topic, json!({"payload": {"n": n, "task_id": "abc"}, "source": "fenrir"}));
    }
    let browser = Browser::start(1280, 860);
    browser.go(&s.base);
    wait_until("the live tail to be live", || browser.text("#tail-status") == "live");
    wait_until("the topics table", || browser.text("#topics tbody").contains("orders.paid"));

    // A published event shows in the live tail.
    let marker = "tail-check-4711";
    let published = Instant::now();
    let event =
        s.publish("task.completed", json!({"payload": {"marker": marker}, "source": "hermes"}));
    wait_until("the event in the live tail", || browser.text("#tail").contains(marker));
    eprintln!("published → shown in the live tail: {:?}", published.elapsed());

    // Its full JSON on click.
    browser.click("#tail li.event-row");
    wait_until("the event's JSON", || {
        browser.text("#detail").contains(event["id"].as_str().unwrap())
    });

    // The publish form writes to the store, and the event comes back through the tail.
    browser.type_into("#publish-topic", "console.test");
    browser.type_into("#publish-payload", r#"{"from": "the form"}"#);
    browser.click("#publish-form button[type=submit]");
    wait_until("the publish result", || browser.text("#publish-result").starts_with("Published"));
    let stored = s.history("topic=console.test");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0]["payload"]["from"].as_str(), stored[0]["source"].as_str()),
        (Some("the form"), Some("console"))
    );
    wait_until("the form's event in the tail", || browser.text("#tail").contains("the form"));
    // A payload that is not JSON is refused in the page, and nothing is sent.
    browser.type_into("#publish-payload", "{oops");
    browser.click("#publish-form button[type=submit]");
    wait_until("the form's error", || browser.text("#publish-result").contains("not JSON"));
    assert_eq!(s.history("topic=console.test").len(), 1);

    // Pause holds new events back until resumed.
    browser.click("#tail-pause");
    s.publish("task.completed", json!({"payload": {"held": "while-paused"}, "source": "s"}));
    wait_until("the held count", || browser.text("#tail-pause").contains("(1)"));
    assert!(!browser.text("#tail").contains("while-paused"));
    browser.click("#tail-pause");
    wait_until("the held event", || browser.text("#tail").contains("while-paused"));

    // The state browser lists a type's entities by status, and an entity's history on click.
    for (id, status) in [("t-1", "active"), ("t-2", "paused"), ("t-3", "active")] {
        let body = json!({"entity_id": id, "updated_by": "fenrir", "status": status}).to_string();
        assert_eq!(s.call("POST", "/v1/state/task", &[], Some(&body)).0, 201);
    }
    let change = r#"{"updated_by": "odin", "merge": {"step": 2}}"#;
    assert_eq!(s.call("PUT", "/v1/state/task/t-1", &[("If-Match", "\"1\"")], Some(change)).0, 200);
    browser.type_into("#states-type", "task");
    browser.eval("document.getElementById('states-status').value = 'active'; return null;");
    browser.click("#states-form button[type=submit]");
    wait_until("the active tasks", || browser.text("#states tbody").contains("t-3"));
    let listed = browser.text("#states tbody");
    assert!(listed.contains("t-1") && !listed.contains("t-2"), "{listed}");
    browser.click("#states tbody tr");
    wait_until("t-1's history", || browser.text("#detail").contains("task/t-1, oldest first"));
    assert!(browser.text("#detail").contains("\"step\": 2"), "{}", browser.text("#detail"));

    // Work groups with their figures; a dead letter is redriven with one click.
    s.publish("poison.a", json!({"payload": {"bad": true}, "source": "s"}));
    let fetch = json!({"topic": "poison.>", "max": 1, "wait_ms": 5000, "start": "beginning",
        "max_deliveries": 1, "member": "console-test"})
    .to_string();
    let (status, _, text) = s.call("POST", "/v1/groups/cleanup/fetch", &[], Some(&fetch));
    assert_eq!(status, 200, "{text}");
    let fetched: Value = serde_json::from_str(&text).unwrap();
    let token = fetched["events"][0]["ack_token"].as_str().expect("a fetched event").to_string();
    let nack = json!({"ack_token": token, "error": "bad payload"}).to_string();
    assert_eq!(s.call("POST", "/v1/groups/cleanup/nack", &[], Some(&nack)).0, 200);
    wait_until("the group in the table", || browser.text("#groups tbody").contains("cleanup"));
    browser.click("#groups tbody tr");
    wait_until("the dead letter", || browser.text("#dead-letters").contains("bad payload"));
    browser.click("#dead-letters button");
    wait_until("the letter redriven", || browser.text("#dead-letters").contains("No dead letters"));
    assert_eq!(s.history("topic=poison.a").len(), 2, "the letter is back on its topic");

    browser.eval("window.scrollTo(0, 0); return null;");
    let shot = browser.screenshot("console-1280.png");
    eprintln!("screenshot: {}", shot.display());
    browser.click("#theme");
    browser.screenshot("console-1280-dark.png");
    browser.session("POST", "/window/rect", json!({"width": 390, "height": 844}));
    let overflow = browser.eval(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
    );
    assert_eq!(overflow, json!(0), "the page scrolls sideways at phone width");
    browser.screenshot("console-phone.png");

    let errors: Vec<Value> =
        browser.logs().into_iter().filter(|l| l["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "the browser console has errors: {errors:#?}");
}

#[test]
fn the_console_asks_for_the_token_once_and_keeps_it_for_the_tab() {
    let dir = Dir::new();
    let s = Served::start(&dir, &["--token", "console-t0ken"]);
    let browser = Browser::start(1280, 860);
    browser.go(&s.base);
    let dialog_open = || browser.eval("return document.getElementById('token-dialog').open;");
    wait_until("the token dialog", || dialog_open() == json!(true));
    browser.type_into("#token-input", "console-t0ken");
    browser.click("#token-form button[type=submit]");
    wait_until("the live tail", || browser.text("#tail-status") == "live");
    s.publish("a.b", json!({"payload": {"marker": "with-token"}, "source": "s"}));
    wait_until("the event in the tail", || browser.text("#tail").contains("with-token"));
    // A reload in the same tab does not ask again.
    browser.go(&s.base);
    wait_until("the live tail after a reload", || browser.text("#tail-status") == "live");
    assert_eq!(dialog_open(), json!(false));
    assert_eq!(
        browser.eval("return sessionStorage.getItem('seed-token') !== null && localStorage.getItem('seed-token') === null;"),
        json!(true),
        "the token must be kept for the tab only"
    );
}
