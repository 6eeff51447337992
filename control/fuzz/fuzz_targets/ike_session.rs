//! Stateful IKE fuzzing (issue 17): libFuzzer's input, read as a seed and
//! a list of actions (`control::ike::scenario::Action`: advance time,
//! corrupt / truncate / duplicate / reorder / drop the next datagram in
//! either direction, replay an earlier one, inject bytes), drives a valid
//! IKEv2 tunnel between two in-memory endpoints through IKE_SA_INIT,
//! IKE_AUTH, CREATE_CHILD_SA rekeys and INFORMATIONAL DPD.
//! `scenario::run` panics when an invariant breaks: an established tunnel
//! lost its Child SA although nothing was lost on the wire, or a clean wire
//! does not bring the tunnel (back) up with matching keys.
#![no_main]

use control::ike::scenario::{Action, run};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fn action(u: &mut Unstructured<'_>) -> Result<Action> {
    Ok(match u.int_in_range(0u8..=10)? {
        0..=3 => Action::Advance(u.int_in_range(0u8..=90)?),
        4 => Action::Mutate {
            to_b: u.arbitrary()?,
            offset: u.arbitrary()?,
            xor: u.arbitrary()?,
        },
        5 => Action::Truncate {
            to_b: u.arbitrary()?,
            len: u.arbitrary()?,
        },
        6 => Action::Duplicate {
            to_b: u.arbitrary()?,
        },
        7 => Action::Reorder {
            to_b: u.arbitrary()?,
        },
        8 => Action::Drop {
            to_b: u.arbitrary()?,
        },
        9 => Action::Replay {
            index: u.arbitrary()?,
        },
        _ => {
            let nat_t = u.arbitrary()?;
            let n = u.int_in_range(0usize..=512)?;
            Action::Inject {
                nat_t,
                bytes: u.bytes(n)?.to_vec(),
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(seed) = u.arbitrary::<u64>() else {
        return;
    };
    let mut actions = Vec::new();
    while actions.len() < 64 {
        match action(&mut u) {
            Ok(a) => actions.push(a),
            Err(_) => break,
        }
    }
    let _ = run(seed, &actions);
});
