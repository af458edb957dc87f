//! The step adapter as a process: what an exported Task's function does, for the checkout of
//! `examples/checkout.rs`. It reads one Task input per line on stdin (the envelope
//! `{"task", "state", "data", "execution", "step"}` the export's Parameters pass, with
//! `error` for an error route's Task) and answers one line: `{"output": <next envelope>}`, or
//! `{"Error": ..., "Cause": ...}` for a failure Step Functions retries and routes by its name.
//! A waiting state's Task (its Payload holds a `token`) is the carrier's: it answers at once,
//! as the customer signs, with the envelope `SendTaskSuccess` would send.
//!
//! The services are the example's, scripted: order 1's gateway fails twice, order 2's card is
//! declined, order 3's gateway is down, the others succeed. The process keeps them between
//! lines, as a warm Lambda function would.
//!
//! `echo '{"task":"Submitted","state":"Submitted","data":{"Submitted":{"order":7,"items":["mug"],"gift":false,"signature":false}},"execution":"0190b3c5-0000-7000-8000-000000000001","step":0}' | cargo run --example step_adapter`

#[allow(dead_code)]
#[path = "checkout.rs"]
mod example;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Mutex;

use example::{Checkout, Services};
use fsm_core::views::{run_task, wait_answer, TaskFailure};

/// The carrier's answer to a waiting Task: the parcel was delivered and signed for.
fn carrier(payload: &serde_json::Value) -> Result<serde_json::Value, TaskFailure> {
    let waiting: Checkout =
        serde_json::from_value(payload["data"].clone()).map_err(|e| TaskFailure {
            error: "fsm.BadInput".into(),
            cause: e.to_string(),
        })?;
    let Checkout::OutForDelivery { order, tracking } = waiting else {
        return Err(TaskFailure {
            error: "fsm.BadInput".into(),
            cause: "the carrier only delivers parcels out for delivery".into(),
        });
    };
    let delivered = Checkout::Delivered {
        order,
        tracking,
        signed_by: "J. Doe".into(),
    };
    wait_answer(payload, delivered)
}

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
            Ok(input) => match if input.get("token").is_some() {
                carrier(&input)
            } else {
                runtime.block_on(run_task::<Checkout, _>(&services, &input))
            } {
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
