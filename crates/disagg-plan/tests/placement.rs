//! Invariants of both placement rules, over random server mixes.

use std::collections::HashSet;

use disagg_plan::{Placement, PlanInput, ServerGroup, plan};
use proptest::prelude::*;

/// A server size that is valid for `gpn`: below a node, or a whole multiple of it.
fn size(gpn: u32) -> impl Strategy<Value = u32> {
    prop_oneof![1..=gpn, (1u32..=4).prop_map(move |k| k * gpn)]
}

fn input() -> impl Strategy<Value = PlanInput> {
    prop_oneof![Just(1u32), Just(2), Just(4), Just(8), 3u32..=7].prop_flat_map(|gpn| {
        (0u32..=6, size(gpn), 1u32..=6, size(gpn), prop::bool::ANY).prop_map(
            move |(cc, cg, gc, gg, packed)| PlanInput {
                gpus_per_node: gpn,
                ctx: ServerGroup {
                    count: cc,
                    gpus: cg,
                },
                gen_: ServerGroup {
                    count: gc,
                    gpus: gg,
                },
                placement: if packed {
                    Placement::Packed
                } else {
                    Placement::Upstream
                },
                ranks: Default::default(),
                ports_from: None,
            },
        )
    })
}

proptest! {
    #[test]
    fn no_gpu_is_given_twice_and_every_server_is_placed(inp in input()) {
        let p = plan(&inp).unwrap();
        prop_assert_eq!(p.servers.len() as u32, inp.ctx.count + inp.gen_.count);
        let mut seen = HashSet::new();
        for s in &p.servers {
            prop_assert_eq!(s.node_indices.len() as u32, s.nodes);
            prop_assert_eq!(s.ntasks, s.nodes * s.ntasks_per_node);
            prop_assert_eq!(s.gpu_indices.len() as u32, s.ntasks_per_node);
            prop_assert!(s.ntasks >= s.gpus, "{} ranks for {} GPUs", s.ntasks, s.gpus);
            for &node in &s.node_indices {
                prop_assert!(node < p.total_nodes);
                for &gpu in &s.gpu_indices {
                    prop_assert!(gpu < p.gpus_per_node);
                    prop_assert!(seen.insert((node, gpu)), "GPU {gpu} of node {node} given twice");
                }
            }
        }
        prop_assert_eq!(p.total_gpus, p.total_nodes * p.gpus_per_node);
        prop_assert_eq!(p.idle_gpus as usize, p.total_gpus as usize - seen.len());
    }

    #[test]
    fn packing_never_needs_more_nodes_than_upstream(inp in input()) {
        let packed = plan(&PlanInput { placement: Placement::Packed, ..inp }).unwrap();
        let upstream = plan(&PlanInput { placement: Placement::Upstream, ..inp }).unwrap();
        prop_assert!(packed.total_nodes <= upstream.total_nodes);
    }

    #[test]
    fn packing_uses_the_fewest_nodes_its_rule_allows(inp in input()) {
        let p = plan(&PlanInput { placement: Placement::Packed, ..inp }).unwrap();
        let gpn = p.gpus_per_node;
        let whole: u32 = p.servers.iter().filter(|s| s.gpus >= gpn).map(|s| s.nodes).sum();
        let small: Vec<u32> = p.servers.iter().filter(|s| s.gpus < gpn).map(|s| s.gpus).collect();
        let shared_nodes = p.total_nodes - whole;
        // Lower bound: no server is split, so the small ones need at least ceil(sum / gpn).
        let lower = small.iter().sum::<u32>().div_ceil(gpn);
        prop_assert!(shared_nodes >= lower);
        if small.iter().all(|g| gpn % g == 0) {
            prop_assert_eq!(shared_nodes, lower, "sizes dividing the node pack perfectly");
        }
        // And no two shared nodes could be merged into one.
        let mut load = std::collections::BTreeMap::<u32, u32>::new();
        for s in p.servers.iter().filter(|s| s.gpus < gpn) {
            *load.entry(s.node_indices[0]).or_default() += s.gpus;
        }
        let loads: Vec<u32> = load.values().copied().collect();
        for i in 0..loads.len() {
            for j in i + 1..loads.len() {
                prop_assert!(loads[i] + loads[j] > gpn, "nodes with {} and {} GPUs could merge", loads[i], loads[j]);
            }
        }
    }
}
