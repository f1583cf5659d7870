// SPDX-License-Identifier: GPL-2.0
/*
 * The delay queue, one per network namespace: frames the engine delays wait
 * here, in order of departure, until an hrtimer sends them with
 * dev_queue_xmit on their out port. A clear sends them at once; a device
 * going away takes its frames along.
 */
#include "rs_kmod.h"

#define RS_QUEUE_LIMIT	 10000			/* delayed frames per namespace */

struct rs_skb_cb {			/* a queued frame (owns skb->cb) */
	u64 due;
	int ifindex;
};
#define RS_CB(skb) ((struct rs_skb_cb *)(skb)->cb)

static void rs_xmit(struct rs_net *rn, struct sk_buff *skb)
{
	struct net_device *dev = dev_get_by_index_rcu(rn->net, RS_CB(skb)->ifindex);

	if (!dev) {
		kfree_skb(skb);
		return;
	}
	memset(skb->cb, 0, sizeof(skb->cb));
	skb->dev = dev;
	skb->tstamp = 0;
	skb_push(skb, ETH_HLEN);
	dev_queue_xmit(skb);
}

static enum hrtimer_restart rs_timer(struct hrtimer *timer)
{
	struct rs_net *rn = container_of(timer, struct rs_net, timer);
	struct sk_buff_head due;
	struct sk_buff *skb;
	u64 now = ktime_get_ns();

	__skb_queue_head_init(&due);
	spin_lock(&rn->qlock);
	while ((skb = skb_peek(&rn->queue)) && RS_CB(skb)->due <= now) {
		__skb_unlink(skb, &rn->queue);
		__skb_queue_tail(&due, skb);
	}
	if (skb)	/* re-armed here, so never HRTIMER_RESTART */
		hrtimer_start(timer, ns_to_ktime(RS_CB(skb)->due), HRTIMER_MODE_ABS_SOFT);
	spin_unlock(&rn->qlock);

	rcu_read_lock();
	while ((skb = __skb_dequeue(&due)))
		rs_xmit(rn, skb);
	rcu_read_unlock();
	return HRTIMER_NORESTART;
}

/* Called with BHs off (hook). Returns false when the queue is full. */
bool rs_enqueue(struct rs_net *rn, struct sk_buff *skb, u64 due, int ifindex)
{
	struct sk_buff *pos;

	BUILD_BUG_ON(sizeof(struct rs_skb_cb) > sizeof_field(struct sk_buff, cb));
	spin_lock(&rn->qlock);
	if (skb_queue_len(&rn->queue) >= RS_QUEUE_LIMIT) {
		rn->queue_drops++;
		spin_unlock(&rn->qlock);
		kfree_skb(skb);
		return false;
	}
	RS_CB(skb)->due = due;
	RS_CB(skb)->ifindex = ifindex;
	/* mostly in order: walk from the tail */
	skb_queue_reverse_walk(&rn->queue, pos)
		if (RS_CB(pos)->due <= due)
			break;
	__skb_queue_after(&rn->queue, pos, skb);
	if (skb_peek(&rn->queue) == skb)
		hrtimer_start(&rn->timer, ns_to_ktime(due), HRTIMER_MODE_ABS_SOFT);
	spin_unlock(&rn->qlock);
	return true;
}

static void rs_purge(struct rs_net *rn)
{
	spin_lock_bh(&rn->qlock);
	__skb_queue_purge(&rn->queue);
	spin_unlock_bh(&rn->qlock);
}

/* Every queued frame leaves now (the program is cleared: nothing holds them any more). */
void rs_release_all(struct rs_net *rn)
{
	struct sk_buff_head all;
	struct sk_buff *skb;

	__skb_queue_head_init(&all);
	spin_lock_bh(&rn->qlock);
	skb_queue_splice_init(&rn->queue, &all);
	spin_unlock_bh(&rn->qlock);
	rcu_read_lock();
	while ((skb = __skb_dequeue(&all)))
		rs_xmit(rn, skb);
	rcu_read_unlock();
}

/* A device going away takes the frames queued to leave by it, or still naming it, along. */
void rs_flush_dev(struct rs_net *rn, struct net_device *dev)
{
	struct sk_buff_head gone;
	struct sk_buff *skb, *tmp;

	__skb_queue_head_init(&gone);
	spin_lock_bh(&rn->qlock);
	skb_queue_walk_safe(&rn->queue, skb, tmp) {
		if (RS_CB(skb)->ifindex == dev->ifindex || skb->dev == dev) {
			__skb_unlink(skb, &rn->queue);
			__skb_queue_tail(&gone, skb);
		}
	}
	spin_unlock_bh(&rn->qlock);
	__skb_queue_purge(&gone);
}

void rs_queue_init(struct rs_net *rn)
{
	spin_lock_init(&rn->qlock);
	__skb_queue_head_init(&rn->queue);
	hrtimer_init(&rn->timer, CLOCK_MONOTONIC, HRTIMER_MODE_ABS_SOFT);
	rn->timer.function = rs_timer;
}

/* The namespace is going and its hook is gone: nothing can queue a frame any more. */
void rs_queue_exit(struct rs_net *rn)
{
	rs_purge(rn);
	hrtimer_cancel(&rn->timer);	/* waits for a running callback */
	rs_purge(rn);
}
