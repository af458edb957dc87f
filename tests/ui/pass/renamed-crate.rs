//! `#[fsm(crate = path)]` for users who reach fsm-core under another name.
mod reexport {
    pub use fsm_core as machines;
}

#[derive(reexport::machines::Fsm)]
#[fsm(crate = reexport::machines)]
enum Light {
    #[fsm(initial, on(switch => On))]
    Off,
    #[fsm(terminal)]
    On,
}

fn main() {
    use reexport::machines::Fsm as _;
    let on = light::Machine::new(light::Off).switch(|_| light::On);
    assert_eq!(Light::from(on).state_name(), "On");
}
