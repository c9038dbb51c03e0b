//! End-to-end tests of the dashboard's JSON API (`docs/api.md`,
//! "Dashboard API") on a real `spoold` with a known workload: every answer
//! is checked against what the workload made, the actions (dry run, retry,
//! purge, cancel, checkpoint reset) against the job table and the log, and
//! their audit records against a `kill -9`. The pages themselves are tested
//! in a real browser in `dashboard_browser.rs`.

mod common;

use common::Spoold;
use common::dashboard::{self, *};
use serde_json::{Value, json};

fn queue<'a>(queues: &'a Value, name: &str) -> &'a Value {
    queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == name)
        .unwrap_or_else(|| panic!("no queue {name} in {queues}"))
}

fn ids(answer: &Value) -> Vec<String> {
    answer["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_shows_the_workload_and_acts_on_it() {
    let mut server = Spoold::start_temp(&[]);
    let workload = dashboard::build(&server).await;
    let admin = server.admin_addr.unwrap();

    // Overview and topics.
    let overview = get(admin, "/api/v1/overview");
    assert_eq!(overview["topics"], 1);
    assert_eq!(overview["partitions"], PARTITIONS);
    assert_eq!(overview["records"], RECORDS);
    assert_eq!(overview["consumers"], 1);
    assert_eq!(overview["jobs"]["dead"], SMTP_DEAD + RESET_DEAD);
    let topics = get(admin, "/api/v1/topics");
    let orders = &topics["topics"][0];
    assert_eq!(
        (orders["name"].as_str(), orders["records"].as_u64()),
        (Some(TOPIC), Some(RECORDS as u64))
    );
    let topic = get(admin, &format!("/api/v1/topics/{TOPIC}"));
    let partitions = topic["partition_list"].as_array().unwrap();
    assert_eq!(partitions.len(), PARTITIONS as usize);
    let held: u64 = partitions.iter().map(|p| p["records"].as_u64().unwrap()).sum();
    assert_eq!(held, RECORDS as u64);
    let missing = common::scrape::get(admin, "/api/v1/topics/nothing-here");
    assert_eq!(missing.status, 404, "{}", missing.body);

    // The message browser: each partition from offset 0, filtered by key
    // and header, values as JSON or hex.
    let mut seen = 0;
    let mut keyed = 0;
    for partition in 0..PARTITIONS {
        let page = get(
            admin,
            &format!("/api/v1/topics/{TOPIC}/messages?partition={partition}&offset=0&limit=500"),
        );
        seen += page["records"].as_array().unwrap().len();
        let first = &page["records"][0];
        assert_eq!(first["value_format"], "json", "{first}");
        assert!(first["value"].as_str().unwrap().contains("\"order\""), "{first}");
        let filtered = get(
            admin,
            &format!(
                "/api/v1/topics/{TOPIC}/messages?partition={partition}&offset=0&key=customer-1&header=region%3Dus"
            ),
        );
        for record in filtered["records"].as_array().unwrap() {
            assert_eq!(record["key"], "customer-1");
            assert_eq!(record["headers"][0]["value"], "us");
            keyed += 1;
        }
    }
    assert_eq!(seen, RECORDS);
    // customer-1 holds records 1, 6, 11, ...: the odd ones are "us".
    assert_eq!(keyed, (0..RECORDS).filter(|i| i % 5 == 1 && i % 2 == 1).count());
    let hex = get(
        admin,
        &format!("/api/v1/topics/{TOPIC}/messages?partition=0&offset=0&limit=1&format=hex"),
    );
    assert_eq!(hex["records"][0]["value_format"], "hex");
    assert!(
        hex["records"][0]["value"]
            .as_str()
            .unwrap()
            .starts_with("00000000  7b"),
        "{hex}"
    );

    // Consumers: the lag of the checkpoint, in records.
    let consumers = get(admin, "/api/v1/consumers");
    let billing = &consumers["consumers"][0];
    assert_eq!(billing["consumer"], CONSUMER);
    assert_eq!(billing["lag_records"], RECORDS - 1, "{billing}");

    // Queues, with their limits and what is in use.
    server.ok(&[
        "queue",
        "config",
        QUEUE,
        "--concurrency-limit",
        "50",
        "--rate-limit",
        "1000/1m",
    ]);
    let queues = get(admin, "/api/v1/queues");
    let emails = queue(&queues, QUEUE);
    assert_eq!(emails["limits"]["concurrency_limit"], 50);
    assert_eq!(
        emails["limits"]["rate_limit"],
        json!({ "jobs": 1000, "per_ms": 60_000 })
    );
    assert_eq!(emails["counts"]["dead"], SMTP_DEAD + RESET_DEAD);
    assert_eq!(emails["counts"]["succeeded"], SUCCEEDED);
    assert_eq!(
        emails["counts"]["available"],
        ENQUEUED - SMTP_DEAD - RESET_DEAD - SUCCEEDED
    );

    // Search through the job layer's indexes.
    let found = get(admin, &format!("/api/v1/search?q={INVOICE_TEXT}&field=payload"));
    assert_eq!(ids(&found), std::slice::from_ref(&workload.invoice_id));
    let found = get(admin, &format!("/api/v1/search?q={INVOICE_KEY}"));
    assert_eq!(ids(&found), std::slice::from_ref(&workload.invoice_id));
    let found = get(admin, "/api/v1/search?q=traceparent&field=header");
    assert_eq!(ids(&found), std::slice::from_ref(&workload.invoice_id));
    let found = get(admin, "/api/v1/search?q=mailbox&field=error");
    assert_eq!(ids(&found).len(), SMTP_DEAD);
    let found = get(admin, &format!("/api/v1/search?q={}", workload.dead_ids[0]));
    assert_eq!(ids(&found), &workload.dead_ids[..1]);
    assert_eq!(
        common::scrape::get(admin, "/api/v1/search?q=x&field=everything").status,
        400
    );

    // A job with its timeline from the log.
    let job = get(admin, &format!("/api/v1/jobs/{}", workload.dead_ids[0]));
    assert_eq!(job["job"]["state"], "dead");
    assert_eq!(job["job"]["attempts"][0]["outcome"], "failed");
    let kinds: Vec<&str> = job["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["enqueued", "claimed", "dead"]);
    let offsets: Vec<u64> = job["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert_eq!(job["timeline"][0]["topic"], "__jobs");
    let invoice = get(admin, &format!("/api/v1/jobs/{}", workload.invoice_id));
    assert_eq!(invoice["job"]["trace_id"], TRACE_ID);
    assert!(invoice["job"]["payload"].as_str().unwrap().contains(INVOICE_TEXT));
    let listed = get(admin, &format!("/api/v1/jobs?queue={QUEUE}&state=dead&limit=2"));
    assert_eq!(ids(&listed).len(), 2);
    assert!(!listed["next_page_token"].as_str().unwrap().is_empty());

    // Dead letters by fingerprint; a dry run changes nothing; a retry of a
    // group makes its jobs available; a purge removes the other group.
    let dead = get(admin, "/api/v1/dead");
    let groups = dead["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{dead}");
    assert_eq!(
        (groups[0]["fingerprint"].as_str(), groups[0]["count"].as_u64()),
        (Some(SMTP_FINGERPRINT), Some(SMTP_DEAD as u64))
    );
    assert_eq!(groups[1]["fingerprint"], "connection reset by peer");
    let group = json!({ "queue": QUEUE, "fingerprint": SMTP_FINGERPRINT });
    let mut dry = group.clone();
    dry["dry_run"] = json!(true);
    let (status, answer) = post(admin, "/api/v1/dead/retry", &dry);
    assert_eq!(
        (status, answer["count"].as_u64()),
        (200, Some(SMTP_DEAD as u64)),
        "{answer}"
    );
    assert_eq!(
        get(admin, "/api/v1/overview")["jobs"]["dead"],
        SMTP_DEAD + RESET_DEAD
    );
    let (status, answer) = post(admin, "/api/v1/dead/retry", &group);
    assert_eq!(
        (status, answer["count"].as_u64()),
        (200, Some(SMTP_DEAD as u64)),
        "{answer}"
    );
    let (status, answer) = post(
        admin,
        "/api/v1/dead/purge",
        &json!({ "queue": QUEUE, "fingerprint": "connection reset by peer" }),
    );
    assert_eq!(
        (status, answer["count"].as_u64()),
        (200, Some(RESET_DEAD as u64)),
        "{answer}"
    );
    let queues = get(admin, "/api/v1/queues");
    assert_eq!(queue(&queues, QUEUE)["counts"]["dead"], 0);
    let (status, answer) = post(admin, "/api/v1/dead/retry", &json!({}));
    assert_eq!(status, 400, "{answer}");

    // A checkpoint reset to the earliest offset: the whole topic is lag.
    let (status, answer) = post(
        admin,
        &format!("/api/v1/consumers/{CONSUMER}/{TOPIC}/reset"),
        &json!({ "to": "earliest" }),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        get(admin, "/api/v1/consumers")["consumers"][0]["lag_records"],
        RECORDS
    );
    let (status, answer) = post(
        admin,
        &format!("/api/v1/consumers/{CONSUMER}/{TOPIC}/reset"),
        &json!({ "to": "offset", "offset": 1_000_000 }),
    );
    assert_eq!(
        status, 400,
        "an offset past the end is refused as gRPC refuses it: {answer}"
    );

    // Cancel one available job.
    let available = get(
        admin,
        &format!("/api/v1/jobs?queue={QUEUE}&state=available&limit=1"),
    );
    let cancelled = ids(&available)[0].clone();
    let (status, answer) = post(admin, &format!("/api/v1/jobs/{cancelled}/cancel"), &json!({}));
    assert_eq!(
        (status, answer["state"].as_str()),
        (200, Some("cancelled")),
        "{answer}"
    );

    // Pause and resume the queue; a second pause changes nothing and is
    // not recorded.
    let (status, answer) = post(admin, &format!("/api/v1/queues/{QUEUE}/pause"), &json!({}));
    assert_eq!(
        (status, answer["changed"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    let (_, answer) = post(admin, &format!("/api/v1/queues/{QUEUE}/pause"), &json!({}));
    assert_eq!(answer["changed"], false);
    assert_eq!(queue(&get(admin, "/api/v1/queues"), QUEUE)["paused"], true);
    assert_eq!(
        dashboard::run_available(&server).await,
        0,
        "a paused queue hands out nothing"
    );
    let (status, answer) = post(admin, &format!("/api/v1/queues/{QUEUE}/resume"), &json!({}));
    assert_eq!(
        (status, answer["changed"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    let (status, _) = post(admin, "/api/v1/queues/nothing-here/pause", &json!({}));
    assert_eq!(status, 404);

    // Every action is in the audit trail, with who asked, and stays there
    // across a kill -9; the setup's CreateTopic over gRPC is there too.
    let expected = [
        "resume_queue",
        "pause_queue",
        "cancel",
        "reset_checkpoint",
        "purge_dead",
        "retry_dead",
        "configure_queue",
        "create_topic",
    ];
    let audit = get(admin, "/api/v1/audit");
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, expected, "{audit}");
    assert_eq!(audit["records"][5]["count"], SMTP_DEAD);
    assert_eq!(audit["records"][5]["user"], "tester");
    assert_eq!(audit["records"][5]["address"], "127.0.0.1");
    assert_eq!(audit["records"][5]["via"], "http");
    assert_eq!(audit["records"][6]["via"], "grpc");
    server.kill9();
    server.restart();
    let audit = get(server.admin_addr.unwrap(), "/api/v1/audit");
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, expected);
}
