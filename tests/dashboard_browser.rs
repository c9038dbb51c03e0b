//! The dashboard in a real browser: Debian's headless Chromium, driven
//! over WebDriver by `chromedriver` (tests/common/webdriver.rs), against a
//! real `spoold` with a known workload. Each page is opened, its numbers
//! compared with the JSON API's, and a screenshot saved under
//! `target/dashboard/`; a job is found by its payload text and its timeline
//! opened; a dead-letter group is retried through the confirmation dialog
//! and its jobs then run; a queue is paused from its row and claims stop,
//! then resumed and they go on.
//!
//! `DASHBOARD_SCREENSHOTS_TO_DOCS=1` also copies the screenshots into
//! `docs/dashboard/`, which `docs/dashboard.md` shows. (Not a `SPOOL_*`
//! name: spoold reads those as configuration keys and refuses unknown
//! ones.)
//!
//! Without chromium and chromedriver the test fails with the command that
//! installs them (`.ci/run` installs them when `CI=true`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::Spoold;
use common::dashboard::{self, *};
use common::webdriver::Browser;
use serde_json::json;

/// `target/dashboard/`, beside the test binaries' profile directory.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<test>")
        .to_owned();
    target.join("dashboard")
}

fn shoot(browser: &Browser, name: &str) {
    let path = screenshot_dir().join(format!("{name}.png"));
    browser.screenshot(&path);
    if std::env::var_os("DASHBOARD_SCREENSHOTS_TO_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&path, docs.join(format!("{name}.png"))).unwrap();
    }
}

/// The text of the cell `field` in the table row matching `row`.
fn field(browser: &Browser, row: &str, field: &str) -> String {
    browser.text(&format!("{row} [data-field=\"{field}\"]"))
}

fn number(text: &str) -> u64 {
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a number"))
}

fn url(admin: SocketAddr, path: &str) -> String {
    format!("http://{admin}{path}")
}

#[test]
fn every_page_shows_the_api_s_numbers_and_its_actions_work() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // A sample every second, so the charts have points within the test.
    let server = Spoold::start_temp(&["metrics_history_interval_ms=1s"]);
    let workload = runtime.block_on(dashboard::build(&server));
    let admin = server.admin_addr.unwrap();
    let browser = Browser::start(1400, 1000);

    // Overview: the cards are the overview API's numbers.
    let overview = get(admin, "/api/v1/overview");
    browser.open(&url(admin, "/"));
    for name in ["topics", "partitions", "records", "consumers", "queues"] {
        assert_eq!(
            number(&browser.text(&format!("[data-field=\"{name}\"]"))),
            overview[name].as_u64().unwrap(),
            "overview card {name}"
        );
    }
    assert_eq!(
        number(&browser.text("[data-field=\"dead\"]")),
        (SMTP_DEAD + RESET_DEAD) as u64
    );
    // The charts draw once the history holds two samples.
    browser.wait_for(
        "document.querySelectorAll('#overview-charts figure').length === 5",
        "five charts",
    );
    browser.click("button[data-range=\"24h\"]");
    browser.wait_for(
        "document.querySelector('button[data-range=\"24h\"]').classList.contains('active')",
        "the 24 h range",
    );
    browser.click("button[data-range=\"1h\"]");
    // Each chart has a line, or says it has no data yet (the first point
    // comes at the end of the first 30 s step the server lived through).
    browser.wait_for(
        "[...document.querySelectorAll('#overview-charts figure')].every(f => f.querySelector('path') || f.querySelector('.empty'))",
        "charts with lines or without data",
    );
    shoot(&browser, "overview");

    // Topics, a topic, and its messages filtered by key.
    let topics = get(admin, "/api/v1/topics");
    browser.open(&url(admin, "/topics"));
    let row = format!("tr[data-topic=\"{TOPIC}\"]");
    assert_eq!(
        number(&field(&browser, &row, "records")),
        topics["topics"][0]["records"].as_u64().unwrap()
    );
    assert_eq!(
        number(&field(&browser, &row, "partitions")),
        u64::from(PARTITIONS)
    );
    shoot(&browser, "topics");
    browser.open(&url(admin, &format!("/topics/{TOPIC}")));
    let api = get(
        admin,
        &format!("/api/v1/topics/{TOPIC}/messages?partition=0&key=customer-0&offset=0"),
    );
    browser.script(
        "const form = document.getElementById('browse');\
         form.from.value = 'offset'; form.at.value = '0'; form.key.value = 'customer-0';",
        json!([]),
    );
    browser.click("#browse button[type=submit]");
    browser.wait_for("document.getElementById('message-list')", "the message list");
    let shown = browser.script(
        "return [...document.querySelectorAll('#message-list tbody tr')].map(r => Number(r.dataset.offset));",
        json!([]),
    );
    let expected: Vec<u64> = api["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(shown, json!(expected));
    shoot(&browser, "topic");

    // Consumers: the lag in records.
    let consumers = get(admin, "/api/v1/consumers");
    browser.open(&url(admin, "/consumers"));
    let row = format!("tr[data-consumer=\"{CONSUMER}\"]");
    assert_eq!(
        number(&field(&browser, &row, "lag_records")),
        consumers["consumers"][0]["lag_records"].as_u64().unwrap()
    );
    shoot(&browser, "consumers");

    // Queues: counts by state.
    let queues = get(admin, "/api/v1/queues");
    browser.open(&url(admin, "/queues"));
    let row = format!("tr[data-queue=\"{QUEUE}\"]");
    for state in ["available", "succeeded", "dead"] {
        assert_eq!(
            number(&field(&browser, &row, state)),
            queues["queues"][0]["counts"][state].as_u64().unwrap(),
            "queue count {state}"
        );
    }
    shoot(&browser, "queues");

    // Jobs: find the invoice by its payload text, open its timeline.
    browser.open(&url(admin, "/jobs"));
    browser.type_into("#search input[name=q]", INVOICE_TEXT);
    browser.click("#search button[type=submit]");
    browser.wait_for("document.querySelector('#job-list tbody tr')", "a search hit");
    let hits = browser.script(
        "return [...document.querySelectorAll('#job-list tbody tr')].map(r => r.dataset.job);",
        json!([]),
    );
    assert_eq!(hits, json!([workload.invoice_id]));
    shoot(&browser, "jobs");
    browser.click(&format!("tr[data-job=\"{}\"] a", workload.invoice_id));
    browser.wait_for(
        "location.pathname.startsWith('/jobs/') && document.getElementById('timeline') && document.getElementById('main').dataset.ready === 'true'",
        "the job page",
    );
    assert_eq!(browser.text("#job-id"), workload.invoice_id);
    assert_eq!(browser.text("[data-field=\"trace_id\"]"), TRACE_ID);
    let job = get(admin, &format!("/api/v1/jobs/{}", workload.invoice_id));
    let enqueued = &job["timeline"][0];
    assert_eq!(
        browser.text("#timeline tr[data-kind=\"enqueued\"] [data-field=\"position\"]"),
        format!("__jobs/0@{}", enqueued["offset"])
    );
    shoot(&browser, "job");

    // Dead letters: retry the SMTP group through the confirmation.
    browser.open(&url(admin, "/dead"));
    let row = format!("tr[data-fingerprint=\"{SMTP_FINGERPRINT}\"]");
    assert_eq!(number(&field(&browser, &row, "count")), SMTP_DEAD as u64);
    shoot(&browser, "dead");
    browser.click(&format!("{row} button.retry"));
    browser.wait_for("document.getElementById('confirm').open", "the confirmation");
    assert!(
        browser
            .text("#confirm-text")
            .contains(&format!("counts {SMTP_DEAD} jobs")),
        "{}",
        browser.text("#confirm-text")
    );
    browser.click("#confirm-ok");
    browser.wait_for_text("#dead-notice", Some(&format!("Retried {SMTP_DEAD} jobs.")));
    browser.wait_for_text(&row, None);
    // The retried jobs run: a worker claims and completes everything
    // available, and the queues page shows them succeeded.
    let ran = runtime.block_on(dashboard::run_available(&server));
    assert_eq!(ran, ENQUEUED - SMTP_DEAD - RESET_DEAD - SUCCEEDED + SMTP_DEAD);
    for id in &workload.dead_ids[..SMTP_DEAD] {
        assert_eq!(
            get(admin, &format!("/api/v1/jobs/{id}"))["job"]["state"],
            "succeeded"
        );
    }
    browser.open(&url(admin, "/queues"));
    let row = format!("tr[data-queue=\"{QUEUE}\"]");
    browser.wait_for_text(
        &format!("{row} [data-field=\"succeeded\"]"),
        Some(&(SUCCEEDED + ran).to_string()),
    );

    // Pause the queue from its row: claims stop; resume it: they go on.
    browser.click(&format!("{row} button.pause"));
    browser.wait_for("document.getElementById('confirm').open", "the confirmation");
    browser.click("#confirm-ok");
    browser.wait_for_text(&format!("{row} [data-field=\"paused\"]"), Some("paused"));
    runtime.block_on(dashboard::enqueue(&server, 2));
    assert_eq!(
        runtime.block_on(dashboard::run_available(&server)),
        0,
        "a paused queue hands out nothing"
    );
    assert_eq!(
        get(admin, "/api/v1/queues")["queues"][0]["counts"]["available"],
        2
    );
    shoot(&browser, "queues-paused");
    browser.click(&format!("{row} button.resume"));
    browser.wait_for("document.getElementById('confirm').open", "the confirmation");
    browser.click("#confirm-ok");
    browser.wait_for_text(&format!("{row} [data-field=\"paused\"]"), Some("running"));
    assert_eq!(
        runtime.block_on(dashboard::run_available(&server)),
        2,
        "claims go on once resumed"
    );

    // The audit trail shows the retry, with its count.
    browser.open(&url(admin, "/audit"));
    assert_eq!(
        number(&field(&browser, "tr[data-action=\"retry_dead\"]", "count")),
        SMTP_DEAD as u64
    );
    shoot(&browser, "audit");
}

/// With authentication on, the dashboard shows a login form; a wrong token
/// is refused in the form, an admin token opens a session in which the
/// pages and their actions (CSRF token and all) work, and logging out
/// returns to the form.
#[test]
fn a_user_logs_in_acts_and_logs_out_in_a_real_browser() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("tokens.toml");
    let mut tokens = spool_auth::Tokens::load(&file).unwrap();
    let grants = ["cluster=admin", "queue:*=*"]
        .iter()
        .map(|g| spool_auth::Grant::parse(g).unwrap())
        .collect();
    let token = tokens.create("ops", grants, 1).unwrap();
    tokens.save(&file).unwrap();
    let server = Spoold::start(
        &scratch.path().join("data"),
        &[&format!("tokens_file={}", file.display())],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let options = spool_client::ClientOptions {
            token: Some(token.clone()),
            ..Default::default()
        };
        let client = spool_client::Client::connect_with(server.url(), options)
            .await
            .unwrap();
        client
            .jobs()
            .enqueue(spool_client::jobs::NewJob::new("emails", "{}"))
            .await
            .unwrap();
    });
    let admin = server.admin_addr.unwrap();
    let browser = Browser::start(1200, 900);

    browser.open(&url(admin, "/queues"));
    browser.wait_for("document.getElementById('login') !== null", "the login form");
    browser.type_into("#token", "spool_00000000_0000");
    browser.click("#login-submit");
    browser.wait_for(
        "document.getElementById('login-error').textContent.length > 0",
        "the refusal",
    );
    shoot(&browser, "login");
    browser.type_into("#token", &token);
    browser.click("#login-submit");
    browser.wait_for(
        "document.querySelector('#queues tr[data-queue=\"emails\"]') !== null",
        "the queues page",
    );
    assert_eq!(browser.text("#principal"), "ops");

    // An action through the session: the page sends its CSRF token.
    let row = "#queues tr[data-queue=\"emails\"]";
    browser.click(&format!("{row} button.pause"));
    browser.wait_for("document.getElementById('confirm').open", "the confirmation");
    browser.click("#confirm-ok");
    browser.wait_for_text(&format!("{row} [data-field=\"paused\"]"), Some("paused"));

    browser.click("#logout");
    browser.wait_for(
        "document.getElementById('login') !== null",
        "the login form again",
    );
}
