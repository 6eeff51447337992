#include "shim.h"

int rte_errno_w(void) { return rte_errno; }

unsigned rte_lcore_id_w(void) { return rte_lcore_id(); }
uint64_t rte_rdtsc_w(void) { return rte_rdtsc(); }
void rte_prefetch0_w(const void *p) { rte_prefetch0(p); }

uint16_t rte_eth_rx_burst_w(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t rte_eth_tx_burst_w(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *rte_pktmbuf_alloc_w(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int rte_pktmbuf_alloc_bulk_w(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned count)
{
	return rte_pktmbuf_alloc_bulk(pool, mbufs, count);
}
void rte_pktmbuf_free_w(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
char *rte_pktmbuf_prepend_w(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *rte_pktmbuf_append_w(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *rte_pktmbuf_adj_w(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int rte_pktmbuf_trim_w(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
void *rte_pktmbuf_mtod_w(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
uint16_t rte_pktmbuf_headroom_w(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t rte_pktmbuf_tailroom_w(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint16_t rte_pktmbuf_data_len_w(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t rte_pktmbuf_pkt_len_w(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t rte_pktmbuf_nb_segs_w(const struct rte_mbuf *m) { return m->nb_segs; }
int rte_pktmbuf_is_contiguous_w(const struct rte_mbuf *m) { return rte_pktmbuf_is_contiguous(m); }
int rte_pktmbuf_linearize_w(struct rte_mbuf *m) { return rte_pktmbuf_linearize(m); }
uint16_t rte_mbuf_port_w(const struct rte_mbuf *m) { return m->port; }
uint32_t rte_mbuf_rss_hash_w(const struct rte_mbuf *m)
{
	return (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH) ? m->hash.rss : 0;
}
struct rte_mempool *rte_mbuf_pool_w(const struct rte_mbuf *m) { return m->pool; }
int rte_mbuf_rx_ip_cksum_w(const struct rte_mbuf *m)
{
	switch (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) {
	case RTE_MBUF_F_RX_IP_CKSUM_GOOD:
		return 1;
	case RTE_MBUF_F_RX_IP_CKSUM_BAD:
		return 2;
	default:
		return 0;
	}
}
void rte_mbuf_tx_ipv4_cksum_w(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len)
{
	m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
	m->l2_len = l2_len;
	m->l3_len = l3_len;
}
int rte_mbuf_tx_ipv4_cksum_requested_w(const struct rte_mbuf *m)
{
	return (m->ol_flags & RTE_MBUF_F_TX_IP_CKSUM) != 0;
}

unsigned rte_ring_enqueue_burst_w(struct rte_ring *r, void *const *obj_table, unsigned n)
{
	return rte_ring_enqueue_burst(r, obj_table, n, NULL);
}
unsigned rte_ring_dequeue_burst_w(struct rte_ring *r, void **obj_table, unsigned n)
{
	return rte_ring_dequeue_burst(r, obj_table, n, NULL);
}
unsigned rte_ring_count_w(const struct rte_ring *r) { return rte_ring_count(r); }
unsigned rte_ring_free_count_w(const struct rte_ring *r) { return rte_ring_free_count(r); }
