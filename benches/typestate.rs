//! The cost of a transition: a chain of 10 states (a branch to a failure state at `S4`), each
//! holding a `u64`, written by hand as typestate code and declared with `#[derive(Fsm)]`.
//!
//! `cargo bench --bench typestate` times both; `benches/callgrind.sh` counts their
//! instructions with callgrind, the steadiest figure. "opaque" runs put every intermediate
//! state through `black_box`, as steps separated by I/O would; "folded" runs let the optimiser
//! see the whole chain.

use std::hint::black_box;

use fsm_core::Fsm;

const SENTINEL: u64 = 0x5EED_0000_DEAD_BEEF;

/// The hand-written baseline: a struct per state and a consuming method per transition.
mod hand {
    use super::SENTINEL;

    pub struct Machine<S> {
        pub state: S,
    }
    pub struct S0(pub u64);
    pub struct S1(pub u64);
    pub struct S2(pub u64);
    pub struct S3(pub u64);
    pub struct S4(pub u64);
    pub struct S5(pub u64);
    pub struct S6(pub u64);
    pub struct S7(pub u64);
    pub struct S8(pub u64);
    pub struct S9(pub u64);
    pub struct F4(pub u64);

    impl Machine<S0> {
        #[inline]
        pub fn new(x: u64) -> Self {
            Machine { state: S0(x) }
        }
    }
    impl Machine<S0> {
        #[inline]
        pub fn t0(self) -> Machine<S1> {
            Machine {
                state: S1(self.state.0.wrapping_add(1)),
            }
        }
    }
    impl Machine<S1> {
        #[inline]
        pub fn t1(self) -> Machine<S2> {
            Machine {
                state: S2(self.state.0.wrapping_add(1)),
            }
        }
    }
    impl Machine<S2> {
        #[inline]
        pub fn t2(self) -> Machine<S3> {
            Machine {
                state: S3(self.state.0.wrapping_add(1)),
            }
        }
    }
    impl Machine<S3> {
        #[inline]
        pub fn t3(self) -> Machine<S4> {
            Machine {
                state: S4(self.state.0.wrapping_add(1)),
            }
        }
    }
    impl Machine<S4> {
        #[inline]
        pub fn t4(self) -> Result<Machine<S5>, Machine<F4>> {
            let x = self.state.0;
            if x == SENTINEL {
                Err(Machine { state: F4(x) })
            } else {
                Ok(Machine {
                    state: S5(x.wrapping_add(1)),
                })
            }
        }
    }
    impl Machine<S5> {
        #[inline]
        pub fn t5(self) -> Machine<S6> {
            Machine {
                state: S6(self.state.0.wrapping_add(1)),
            }
        }
    }
    impl Machine<S6> {
        #[inline]
        pub fn t6(self) -> Machine<S7> {
            Machine {
                state: S7(self.state.0.wrapping_add(1)),
            }
        }
    }
    impl Machine<S7> {
        #[inline]
        pub fn t7(self) -> Machine<S8> {
            Machine {
                state: S8(self.state.0.wrapping_add(1)),
            }
        }
    }
    impl Machine<S8> {
        #[inline]
        pub fn t8(self) -> Machine<S9> {
            Machine {
                state: S9(self.state.0.wrapping_add(1)),
            }
        }
    }
}

#[derive(Fsm)]
pub enum Chain {
    #[fsm(initial, on(t0 => S1))]
    S0(u64),
    #[fsm(on(t1 => S2))]
    S1(u64),
    #[fsm(on(t2 => S3))]
    S2(u64),
    #[fsm(on(t3 => S4))]
    S3(u64),
    #[fsm(on(t4 => S5 | F4))]
    S4(u64),
    #[fsm(on(t5 => S6))]
    S5(u64),
    #[fsm(on(t6 => S7))]
    S6(u64),
    #[fsm(on(t7 => S8))]
    S7(u64),
    #[fsm(on(t8 => S9))]
    S8(u64),
    #[fsm(terminal)]
    S9(u64),
    #[fsm(terminal(failure))]
    F4(u64),
}

#[no_mangle]
#[inline(never)]
pub fn fsm_hand_opaque(seed: u64) -> u64 {
    let m = black_box(hand::Machine::new(seed));
    let m = black_box(m.t0());
    let m = black_box(m.t1());
    let m = black_box(m.t2());
    let m = black_box(m.t3());
    let m = match m.t4() {
        Ok(m) => black_box(m),
        Err(f) => return !f.state.0 ^ 4,
    };
    let m = black_box(m.t5());
    let m = black_box(m.t6());
    let m = black_box(m.t7());
    let m = black_box(m.t8());
    m.state.0
}

#[no_mangle]
#[inline(never)]
pub fn fsm_derived_opaque(seed: u64) -> u64 {
    let m = black_box(chain::Machine::new(chain::S0(seed)));
    let m = black_box(m.t0(|s| chain::S1(s.0.wrapping_add(1))));
    let m = black_box(m.t1(|s| chain::S2(s.0.wrapping_add(1))));
    let m = black_box(m.t2(|s| chain::S3(s.0.wrapping_add(1))));
    let m = black_box(m.t3(|s| chain::S4(s.0.wrapping_add(1))));
    let m = if m.0 == SENTINEL {
        return !m.t4(|s| chain::F4(s.0)).0 ^ 4;
    } else {
        black_box(m.t4(|s| chain::S5(s.0.wrapping_add(1))))
    };
    let m = black_box(m.t5(|s| chain::S6(s.0.wrapping_add(1))));
    let m = black_box(m.t6(|s| chain::S7(s.0.wrapping_add(1))));
    let m = black_box(m.t7(|s| chain::S8(s.0.wrapping_add(1))));
    let m = black_box(m.t8(|s| chain::S9(s.0.wrapping_add(1))));
    m.0
}

#[no_mangle]
#[inline(never)]
pub fn fsm_hand_folded(seed: u64) -> u64 {
    let m = hand::Machine::new(seed);
    let m = m.t0();
    let m = m.t1();
    let m = m.t2();
    let m = m.t3();
    let m = match m.t4() {
        Ok(m) => m,
        Err(f) => return !f.state.0 ^ 4,
    };
    let m = m.t5();
    let m = m.t6();
    let m = m.t7();
    let m = m.t8();
    m.state.0
}

#[no_mangle]
#[inline(never)]
pub fn fsm_derived_folded(seed: u64) -> u64 {
    let m = chain::Machine::new(chain::S0(seed));
    let m = m.t0(|s| chain::S1(s.0.wrapping_add(1)));
    let m = m.t1(|s| chain::S2(s.0.wrapping_add(1)));
    let m = m.t2(|s| chain::S3(s.0.wrapping_add(1)));
    let m = m.t3(|s| chain::S4(s.0.wrapping_add(1)));
    let m = if m.0 == SENTINEL {
        return !m.t4(|s| chain::F4(s.0)).0 ^ 4;
    } else {
        m.t4(|s| chain::S5(s.0.wrapping_add(1)))
    };
    let m = m.t5(|s| chain::S6(s.0.wrapping_add(1)));
    let m = m.t6(|s| chain::S7(s.0.wrapping_add(1)));
    let m = m.t7(|s| chain::S8(s.0.wrapping_add(1)));
    let m = m.t8(|s| chain::S9(s.0.wrapping_add(1)));
    m.0
}

#[divan::bench(args = ["hand", "derived"])]
fn opaque_chain(which: &str) -> u64 {
    let run = if which == "hand" {
        fsm_hand_opaque
    } else {
        fsm_derived_opaque
    };
    run(black_box(7))
}

#[divan::bench(args = ["hand", "derived"])]
fn folded_chain(which: &str) -> u64 {
    let run = if which == "hand" {
        fsm_hand_folded
    } else {
        fsm_derived_folded
    };
    run(black_box(7))
}

fn main() {
    // The two runs agree on every path before anything is measured.
    for seed in [0, 7, SENTINEL - 4, u64::MAX] {
        assert_eq!(fsm_hand_opaque(seed), fsm_derived_opaque(seed));
        assert_eq!(fsm_hand_folded(seed), fsm_derived_folded(seed));
    }
    // `count N`: run each function N times, for callgrind (benches/callgrind.sh).
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "count") {
        let n: u64 = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(1000);
        let mut acc = 0u64;
        for seed in 0..n {
            acc ^= fsm_hand_opaque(black_box(seed));
            acc ^= fsm_derived_opaque(black_box(seed));
            acc ^= fsm_hand_folded(black_box(seed));
            acc ^= fsm_derived_folded(black_box(seed));
        }
        println!("{acc}");
        return;
    }
    divan::main();
}
