//! The forwarding path reports to xenoprof as class `bridge`, once per batch.

use std::time::Duration;

use bridge_lite::testkit::udp_frame;
use bridge_lite::{Bridge, BridgeConfig, MacAddr, Output, PortKind};
use xenoprof::{Class, ClockSource, Context, ManualClock, Mode};

#[test]
fn one_bridge_scope_per_batch_not_per_frame() {
    xenoprof::set_mode(Mode::Exact);
    let clock = ManualClock::new();
    let vcpu = xenoprof::register_vcpu_with_clock(0, Context::Kernel, ClockSource::Manual(clock));
    let mut br = Bridge::new(BridgeConfig::default()).unwrap();
    let up = br.add_port(PortKind::Uplink).unwrap();
    br.add_port(PortKind::Vif {
        domid: 1,
        handle: 0,
    })
    .unwrap();
    let f = udp_frame(MacAddr::local(1), MacAddr::BROADCAST, 60, 0);
    let mut out = Output::new();
    for _ in 0..3 {
        let mut batch = vec![f.as_slice(); 32];
        br.forward(up, &mut batch, Duration::ZERO, &mut out)
            .unwrap();
    }
    assert_eq!(out.len(), 96);
    assert_eq!(vcpu.calls(Context::Kernel, Class::BRIDGE), 3);
}
