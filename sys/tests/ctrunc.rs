//! MSG_CTRUNC: more fds than the receive buffer holds. Alone in its own test
//! binary so that the process-wide fd count is not disturbed by other tests.

use mob_sys::channel::{MAX_FDS_PER_READ, RecvError, recv_with_fds, send_with_fds, socketpair};
use std::os::fd::AsRawFd;

#[test]
fn too_many_fds_truncate_and_every_received_fd_is_closed() {
    let (a, b) = socketpair().unwrap();
    let (p, _q) = socketpair().unwrap();
    let many = vec![p.as_raw_fd(); MAX_FDS_PER_READ + 4];
    let before = mob_sys::process::open_fd_count().unwrap();
    send_with_fds(&a, b"x", &many).unwrap();
    let mut buf = [0u8; 4];
    let mut fds = Vec::new();
    assert!(matches!(recv_with_fds(&b, &mut buf, &mut fds), Err(RecvError::ControlTruncated)));
    assert!(fds.is_empty());
    assert_eq!(mob_sys::process::open_fd_count().unwrap(), before);
}
