//! What the image crate's slow tests share.

use std::path::PathBuf;

/// `<target>/x86_64-unknown-linux-gnu/release/node-agent`, found from the running test
/// binary (`<target>/debug/deps/NAME-HASH`), or `$NODE_AGENT_STATIC`.
pub fn static_agent() -> PathBuf {
    if let Some(path) = std::env::var_os("NODE_AGENT_STATIC") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    let agent = target.join("x86_64-unknown-linux-gnu/release/node-agent");
    assert!(
        agent.is_file(),
        "no static node-agent at {}: run `cargo xtask ramdisk` or `cargo xtask host-image` once \
         (`cargo xtask test` builds it before the tests)",
        agent.display()
    );
    agent
}
