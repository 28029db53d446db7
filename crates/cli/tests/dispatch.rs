//! Jobs across nodes: four real `vouch node` processes, each a validator and a provider
//! with the real model, every job audited (audit rate 1). Node 0's gateway spreads
//! concurrent requests over the providers of the network; a streamed answer whose
//! provider is killed with SIGKILL mid-answer is finished by another provider, and the
//! client sees one answer and one receipt covering all of it. Validators audit jobs
//! served on other nodes (fetching the receipts over p2p): every one passes, nobody is
//! slashed, and the dead provider's escrow expires and is refunded.

mod common;

use common::net::*;
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::time::Duration;

fn job_events(url: &str, job: &str) -> Vec<Value> {
    get_json(&format!("{url}/v1/jobs/{job}"))["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sum of a counter (`name{labels}`) over the nodes that answer.
fn counter(urls: &[String], series: &str) -> u64 {
    urls.iter()
        .filter_map(|u| agent().get(&format!("{u}/metrics")).call().ok())
        .filter_map(|mut r| r.body_mut().read_to_string().ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.starts_with(series))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn has_event(events: &[Value], name: &str) -> bool {
    events.iter().any(|e| e.to_string().contains(name))
}

#[test]
fn a_gateway_spreads_jobs_and_fails_over_when_a_provider_dies() {
    let mut net = Net::new(
        4,
        &[0, 1, 2, 3],
        // Audits here share two cores with four nodes and a long generation: a window
        // of 30 s leaves room for a re-execution when a provider's opening never comes.
        &[
            "--audit-rate",
            "1",
            "--job-timeout-ms",
            "15000",
            "--challenge-window-ms",
            "30000",
        ],
    );
    for f in &mut net.flags {
        f.push("--provider".into());
    }
    let mut nodes: Vec<Option<(Node, String)>> = (0..4).map(|i| Some(net.start(i))).collect();
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().1.clone())
        .collect();
    let gw = urls[0].clone();
    let api_key = net.api_key(0, &gw);
    // The gateway hears every provider announce itself over p2p.
    wait_until("four providers reachable", Duration::from_secs(60), || {
        let v = get_json(&format!("{gw}/v1/providers"));
        v["providers"]
            .as_array()
            .is_some_and(|a| a.iter().filter(|p| p["available"] == true).count() == 4)
    });

    // Six concurrent requests: the gateway spreads them over several providers.
    let ask = |body: Value| -> Value {
        let mut r = agent()
            .post(&format!("{gw}/v1/chat/completions"))
            .header("authorization", &format!("Bearer {api_key}"))
            .send_json(&body)
            .unwrap();
        let status = r.status();
        let v: Value = r.body_mut().read_json().unwrap();
        assert_eq!(status, 200, "{v}");
        v
    };
    let answers: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|k| {
                let ask = &ask;
                s.spawn(move || {
                    ask(json!({"model": "smollm2-135m", "max_tokens": 6,
                               "messages": [{"role": "user", "content": format!("question {k}: name a fruit")}]}))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served: HashSet<String> = answers
        .iter()
        .map(|a| a["vouch"]["provider"].as_str().unwrap().to_string())
        .collect();
    assert!(
        served.len() >= 2 && served.iter().any(|p| p != &net.providers[0]),
        "six concurrent jobs all on one provider: {served:?}"
    );
    let mut jobs: Vec<String> = answers
        .iter()
        .map(|a| a["vouch"]["job"].as_str().unwrap().to_string())
        .collect();

    // A long streamed answer, asked of node 2's provider; node 2 dies after the first
    // words reach the client.
    let victim = net.providers[2].clone();
    let resp = agent()
        .post(&format!("{gw}/v1/chat/completions"))
        .header("authorization", &format!("Bearer {api_key}"))
        .send_json(json!({
            "model": "smollm2-135m", "max_tokens": 160, "stream": true, "provider": victim,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}],
        }))
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    let mut finals = Vec::new();
    let mut killed = false;
    for line in BufReader::new(resp.into_body().into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        assert!(v.get("error").is_none(), "stream error: {v}");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
            if !killed && !t.is_empty() {
                let (mut n, _) = nodes[2].take().unwrap();
                n.0.kill().unwrap();
                n.0.wait().unwrap();
                killed = true;
            }
        }
        if v.get("vouch").is_some() {
            finals.push(v["vouch"].clone());
        }
    }
    assert!(killed, "the stream never produced text");
    assert_eq!(finals.len(), 1, "one receipt per answer: {finals:?}");
    let fin = &finals[0];
    let failover = fin["failover"].as_array().expect("a failover record");
    assert_eq!(failover[0]["provider"], json!(victim), "{fin}");
    assert_ne!(fin["provider"], json!(victim));
    let dead_job = failover[0]["job"].as_str().unwrap().to_string();
    jobs.push(fin["job"].as_str().unwrap().to_string());

    // The receipt covers exactly the text the client saw, is committed, and checks
    // offline against the genesis validators.
    let rid = fin["receipt"].as_str().unwrap();
    let mut r = agent()
        .get(&format!("{gw}/v1/receipts/{rid}?wait_ms=20000"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let receipt: vouch_types::Receipt = r.body_mut().read_json().unwrap();
    assert_eq!(receipt.output, text);
    assert!(receipt.output_tokens.len() > 20, "a long answer: {text:?}");
    vouch_verify::check_fast(&receipt).unwrap();
    vouch_verify::inclusion::check_inclusion(&receipt, Some(&net.genesis().validators)).unwrap();

    // Every job is audited by a validator on another node and passes; the dead
    // provider's escrow expires and is refunded.
    wait_until("every job audited", Duration::from_secs(120), || {
        jobs.iter().all(|j| {
            let ev = job_events(&gw, j);
            has_event(&ev, "job_audited") || has_event(&ev, "JobAudited")
        })
    });
    for j in &jobs {
        let ev = job_events(&gw, j);
        let text = serde_json::to_string(&ev).unwrap();
        assert!(!text.contains("\"pass\":false"), "job {j}: {text}");
        assert!(!text.to_lowercase().contains("slash"), "job {j}: {text}");
    }
    // The audits were spot checks: each auditor fetched the provider's trace opening over
    // the p2p link from another node (an auditor never audits its own node's provider).
    let spot_pass = counter(
        &urls,
        "vouch_audit_runs_total{mode=\"spot\",result=\"pass\"}",
    );
    let spot_fail = counter(
        &urls,
        "vouch_audit_runs_total{mode=\"spot\",result=\"fail\"}",
    );
    assert!(spot_pass >= 1, "no spot-check audit ran");
    assert_eq!(spot_fail, 0, "an honest job failed a spot check");
    wait_until(
        "the dead provider's escrow expires",
        Duration::from_secs(60),
        || {
            let ev = job_events(&gw, &dead_job);
            has_event(&ev, "job_expired") || has_event(&ev, "JobExpired")
        },
    );
    eprintln!(
        "dispatch: six jobs on {} providers; stream failed over from {} to {} after {:?}",
        served.len(),
        &victim[..8],
        fin["provider"],
        failover[0]["reason"]
    );
}
