//! ring: Xen io/ring.h and io/netif.h. Being built by the shared-rings issue.
