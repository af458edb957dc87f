//! The step adapter as a process: what an exported Task's function does, for the checkout of
//! `examples/checkout.rs`. It reads one Task input per line on stdin (the envelope
//! `{"state", "data", "step", "execution"}`, with `route` and `error` for an error route's
//! Task) and answers one line: `{"output": <next envelope>}`, or `{"Error": ..., "Cause": ...}`
//! for a failure Step Functions retries and routes by its name.
//!
//! The services are the example's, scripted: order 1's gateway fails twice, order 2's card is
//! declined, order 3's gateway is down, the others succeed. The process keeps them between
//! lines, as a warm Lambda function would.
//!
//! `echo '{"state":"Submitted","data":{"Submitted":{"order":7,"items":["mug"],"gift":false,"signature":false}}}' | cargo run --example step_adapter`

#[allow(dead_code)]
#[path = "checkout.rs"]
mod example;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Mutex;

use example::{Checkout, Services};
use fsm_core::views::run_task;

fn main() {
    let services = Services {
        stock: Mutex::new(HashMap::from([
            ("mug".to_string(), 100),
            ("tea".to_string(), 100),
        ])),
        gateway_failures: Mutex::new(HashMap::from([(1, 2), (3, 1_000)])),
        declined: vec![2],
        ..Services::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(input) => match runtime.block_on(run_task::<Checkout, _>(&services, &input)) {
                Ok(output) => serde_json::json!({ "output": output }),
                Err(failure) => {
                    serde_json::json!({ "Error": failure.error, "Cause": failure.cause })
                }
            },
            Err(e) => serde_json::json!({ "Error": "fsm.BadInput", "Cause": e.to_string() }),
        };
        let mut out = stdout.lock();
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
}
