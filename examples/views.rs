//! The checkout's views: its diagram (Mermaid or DOT), an executed path over it, and its
//! export to Amazon States Language.
//!
//! ```sh
//! cargo run --example views -- mermaid            # the diagram, as in the README
//! cargo run --example views -- dot | dot -Tsvg > checkout.svg
//! cargo run --example views -- path-dot | dot -Tsvg > retried.svg   # an order retried twice
//! cargo run --example views -- path-mermaid
//! cargo run --example views -- asl > checkout.asl.json
//! ```

#[allow(dead_code)]
#[path = "checkout.rs"]
mod example;

use std::collections::HashMap;
use std::sync::Mutex;

use example::checkout::{Machine, Submitted};
use example::{Checkout, Services};
use fsm_core::views::{Asl, Diagram};
use fsm_core::{Executor, Fsm, History};

/// A gift order whose payment gateway fails twice before it charges.
fn retried_order() -> History {
    let services = Services {
        stock: Mutex::new(HashMap::from([("mug".to_string(), 10)])),
        gateway_failures: Mutex::new(HashMap::from([(1, 2)])),
        ..Services::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let executor = Executor::<Checkout, _>::new(services);
    let start = Machine::new(Submitted {
        order: 1,
        items: vec!["mug".to_string()].into(),
        gift: true,
        signature: false,
    });
    runtime.block_on(executor.run(start)).history
}

fn main() {
    let def = Checkout::DEFINITION;
    let what = std::env::args().nth(1).unwrap_or_else(|| "mermaid".into());
    let text = match what.as_str() {
        "mermaid" => Diagram::new(def).mermaid(),
        "dot" => Diagram::new(def).dot(),
        "path-mermaid" => Diagram::new(def).with_path(&retried_order()).mermaid(),
        "path-dot" => Diagram::new(def).with_path(&retried_order()).dot(),
        "asl" => Asl::new(def).to_json_pretty(),
        other => {
            eprintln!("unknown view `{other}`: mermaid, dot, path-mermaid, path-dot or asl");
            std::process::exit(2);
        }
    };
    print!("{text}");
}
