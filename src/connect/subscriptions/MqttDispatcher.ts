import type { IPublishPacket } from 'mqtt';

import { NO_CID, type MqttReporting } from '../../shared/pip';
import { toError } from '../errors/MqttErrors';
import type { IMqttMessageListener } from '../IMqttMessageListener';
import type { MqttBacklog, MqttSubscriptions } from './MqttSubscriptions';
import { MqttUnroutedHold } from './MqttUnroutedHold';

/**
 * Hands each incoming message to the listeners whose filters match its topic, each isolated from
 * the others (a listener that throws or rejects is logged). With a persistent session, messages
 * no listener matches yet are held (see [[MqttUnroutedHold]]) for the first listener that
 * subscribes to them, and counted and logged when dropped.
 */
export class MqttDispatcher implements MqttBacklog {
    /** With a persistent session: messages for filters no listener has yet; null with a clean session. */
    private readonly _unrouted: MqttUnroutedHold | null;
    private _droppingUnrouted = false;

    /**
     * @param keepUnrouted hold the messages no listener matches yet (clean_session false: the broker's
     *   queue comes before the new process subscribes).
     * @param holdLimit   at most this many held messages (options.max_offline_messages).
     */
    public constructor(
        private readonly _subscriptions: MqttSubscriptions,
        private readonly _reporting: MqttReporting,
        private readonly _displayUri: string,
        keepUnrouted: boolean,
        holdLimit: number,
    ) {
        this._unrouted = keepUnrouted ? new MqttUnroutedHold(holdLimit) : null;
    }

    /** Hands an incoming message to the listeners whose filters match it (or to the hold of a persistent session). */
    public dispatch(topic: string, payload: Buffer, packet: IPublishPacket): void {
        this._reporting.counters.incrementOne('mqtt.received_messages');
        const listeners = this._subscriptions.match(topic);
        if (listeners.length === 0 && this._unrouted) {
            this.holdUnrouted(topic, payload, packet);
            return;
        }
        for (const listener of listeners) this.deliver(listener, topic, payload, packet);
    }

    /** Remembers that this process let go of a filter, so messages still coming for it are not held. */
    public released(matchFilter: string): void {
        this._unrouted?.released(matchFilter);
    }

    /**
     * Hands a new listener the messages the persistent session brought for its filter before it
     * subscribed (see MqttUnroutedHold), in arrival order.
     */
    public releaseHeld(matchFilter: string, listener: IMqttMessageListener): void {
        if (!this._unrouted) return;
        const held = this._unrouted.take(matchFilter);
        if (held.length > 0) this._droppingUnrouted = false;
        for (const { topic, payload, packet } of held) this.deliver(listener, topic, payload, packet);
    }

    /** At close(): what is still held was acknowledged to the broker and goes now; say so. */
    public dropHeld(): void {
        const held = this._unrouted?.size ?? 0;
        if (held === 0) return;
        this._unrouted!.clear();
        this._reporting.counters.increment('mqtt.dropped_messages', held);
        this._reporting.logger.warn(NO_CID, 'Closed the MQTT connection to %s with %d messages of its persistent session that no listener ' +
            'subscribed to; they are dropped', this._displayUri, held);
    }

    private holdUnrouted(topic: string, payload: Buffer, packet: IPublishPacket): void {
        const hold = this._unrouted!;
        const counters = this._reporting.counters;
        // A topic of a filter this process unsubscribed: nobody here wants it any more (it may also
        // match an older filter of the session, but a PUBLISH does not say which: counted as dropped).
        if (hold.wasReleased(topic)) {
            counters.incrementOne('mqtt.dropped_messages');
            return;
        }
        if (hold.hold({ topic, payload, packet })) return;
        counters.incrementOne('mqtt.dropped_messages');
        if (this._droppingUnrouted) return;
        this._droppingUnrouted = true;
        this._reporting.logger.warn(NO_CID, 'MQTT broker at %s sent messages for topics no listener subscribes to (the persistent session ' +
            'has subscriptions from before); %d are held for a future listener, further ones are dropped: unsubscribe what is no longer used',
        this._displayUri, hold.size);
    }

    private deliver(listener: IMqttMessageListener, topic: string, payload: Buffer, packet: IPublishPacket): void {
        try {
            const result = listener.onMessage(topic, payload, packet);
            if (result != null && typeof result.then === 'function') {
                result.then(undefined, (err: unknown) => this.listenerFailed(topic, err));
            }
        } catch (err) {
            this.listenerFailed(topic, err);
        }
    }

    private listenerFailed(topic: string, err: unknown): void {
        this._reporting.logger.error(NO_CID, toError(err), 'MQTT message listener failed on topic %s', topic);
    }
}
