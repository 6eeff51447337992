/*
 * C shim: one exported wrapper per DPDK static inline function or macro the
 * Rust side needs. Each is named after what it wraps with a `_w` suffix.
 * Keep every wrapper a single call: no logic lives here.
 */
#ifndef VPN_DPDK_SHIM_H
#define VPN_DPDK_SHIM_H

#include <rte_config.h>
#include <rte_common.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_prefetch.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_flow.h>
#include <rte_ring.h>
#include <rte_eth_ring.h>
#include <rte_version.h>

/** rte_errno of the calling thread (a per-lcore TLS macro). */
int rte_errno_w(void);

/** rte_lcore_id(): the EAL lcore id of the calling thread. */
unsigned rte_lcore_id_w(void);
/** rte_rdtsc(): the time-stamp counter. */
uint64_t rte_rdtsc_w(void);
/** rte_prefetch0(): prefetch into all cache levels. */
void rte_prefetch0_w(const void *p);

/** rte_eth_rx_burst(): receive up to nb_pkts packets from one rx queue. */
uint16_t rte_eth_rx_burst_w(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
/** rte_eth_tx_burst(): hand up to nb_pkts packets to one tx queue; returns how many it took. */
uint16_t rte_eth_tx_burst_w(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts);

/** rte_pktmbuf_alloc(): one mbuf from the pool, reset, or NULL. */
struct rte_mbuf *rte_pktmbuf_alloc_w(struct rte_mempool *mp);
/** rte_pktmbuf_alloc_bulk(): count mbufs or none (returns 0 or a negative errno). */
int rte_pktmbuf_alloc_bulk_w(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned count);
/** rte_pktmbuf_free(): free a packet (all its segments). */
void rte_pktmbuf_free_w(struct rte_mbuf *m);
/** rte_pktmbuf_prepend(): grow at the front; NULL if the headroom is too small. */
char *rte_pktmbuf_prepend_w(struct rte_mbuf *m, uint16_t len);
/** rte_pktmbuf_append(): grow at the back; NULL if the tailroom is too small. */
char *rte_pktmbuf_append_w(struct rte_mbuf *m, uint16_t len);
/** rte_pktmbuf_adj(): remove len bytes at the front; NULL if the packet is shorter. */
char *rte_pktmbuf_adj_w(struct rte_mbuf *m, uint16_t len);
/** rte_pktmbuf_trim(): remove len bytes at the back; 0 or -1. */
int rte_pktmbuf_trim_w(struct rte_mbuf *m, uint16_t len);
/** rte_pktmbuf_mtod(): pointer to the first data byte. */
void *rte_pktmbuf_mtod_w(struct rte_mbuf *m);
/** rte_pktmbuf_headroom(): bytes before the data. */
uint16_t rte_pktmbuf_headroom_w(const struct rte_mbuf *m);
/** rte_pktmbuf_tailroom(): bytes after the data in the last segment. */
uint16_t rte_pktmbuf_tailroom_w(const struct rte_mbuf *m);
/** rte_pktmbuf_data_len(): bytes of data in this segment. */
uint16_t rte_pktmbuf_data_len_w(const struct rte_mbuf *m);
/** rte_pktmbuf_pkt_len(): bytes of data in the whole packet. */
uint32_t rte_pktmbuf_pkt_len_w(const struct rte_mbuf *m);
/** m->nb_segs: number of segments of the packet. */
uint16_t rte_pktmbuf_nb_segs_w(const struct rte_mbuf *m);
/** rte_pktmbuf_is_contiguous(): whether the packet is one segment. */
int rte_pktmbuf_is_contiguous_w(const struct rte_mbuf *m);
/** rte_pktmbuf_linearize(): make a chained packet one segment (0 or -1). */
int rte_pktmbuf_linearize_w(struct rte_mbuf *m);
/** m->port: the input port of a received packet. */
uint16_t rte_mbuf_port_w(const struct rte_mbuf *m);
/** m->hash.rss if RTE_MBUF_F_RX_RSS_HASH is set, else 0. */
uint32_t rte_mbuf_rss_hash_w(const struct rte_mbuf *m);
/** rte_mempool_in_use_count() of the mbuf's own pool. */
struct rte_mempool *rte_mbuf_pool_w(const struct rte_mbuf *m);
/** The NIC's IPv4 header checksum verdict: 0 unknown/none, 1 good, 2 bad. */
int rte_mbuf_rx_ip_cksum_w(const struct rte_mbuf *m);
/** Asks the NIC to fill the IPv4 header checksum on transmit
 *  (RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM, l2_len, l3_len). */
void rte_mbuf_tx_ipv4_cksum_w(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len);
/** Whether rte_mbuf_tx_ipv4_cksum_w() was called on the mbuf. */
int rte_mbuf_tx_ipv4_cksum_requested_w(const struct rte_mbuf *m);

/** rte_ring_enqueue_burst(): enqueue up to n pointers; returns how many. */
unsigned rte_ring_enqueue_burst_w(struct rte_ring *r, void *const *obj_table, unsigned n);
/** rte_ring_dequeue_burst(): dequeue up to n pointers; returns how many. */
unsigned rte_ring_dequeue_burst_w(struct rte_ring *r, void **obj_table, unsigned n);
/** rte_ring_count(): entries in the ring. */
unsigned rte_ring_count_w(const struct rte_ring *r);
/** rte_ring_free_count(): free entries in the ring. */
unsigned rte_ring_free_count_w(const struct rte_ring *r);

#endif
