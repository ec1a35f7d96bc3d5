import type { IClientSubscribeOptions } from 'mqtt';
import { ApplicationException, ConnectionException } from 'pip-services3-commons-nodex';
import type { ILogger } from 'pip-services3-components-nodex';

import { NO_CID } from '../../shared/pip';
import { MqttErrorCode } from '../errors/MqttErrorCode';
import { brokerRefusal, wrapMqttError } from '../errors/MqttErrors';
import type { MqttFilterEntry, MqttRegistration } from './MqttFilterEntry';

/** What MqttFilterSync needs of the connection to the broker; the link (MqttLink) provides it. */
export interface MqttFilterBroker {
    /** True while the client can send (whenConnected() would resolve at once). */
    isConnected(): boolean;
    /** Resolves when connected; rejects `MQTT_CLOSED` at close, `MQTT_NOT_CONNECTED` when down for good. */
    whenConnected(): Promise<void>;
    /**
     * Sends SUBSCRIBE; resolves with the SUBACK code (0x80 and up: refused) and the broker's
     * reason string. `resubscribe`: sent again for a filter the broker may still hold (after a reconnect).
     */
    subscribe(topic: string, options: IClientSubscribeOptions, resubscribe: boolean): Promise<{ code: number; reasonString?: string }>;
    /** Sends UNSUBSCRIBE; rejects `MQTT_UNSUBSCRIBE_FAILED` when the broker refuses. */
    unsubscribe(topic: string): Promise<void>;
    /** True for an error caused by the connection dropping under the operation. */
    isLost(err: unknown): boolean;
    /** True when the broker keeps subscriptions across disconnects (clean_session false). */
    readonly persistent: boolean;
    readonly logger: ILogger;
    /** Calls `callback` once at the next loss of the connection or at its end; returns a function that cancels it. */
    onNextLoss(callback: () => void): () => void;
    /** Ms to wait before asking again for a filter refused `attempt` + 1 times in a row after a reconnect (the reconnect backoff). */
    retryDelay(attempt: number): number;
}

/** `MQTT_QOS_NOT_GRANTED`: the broker granted `granted` for a filter asked at `want`. */
function notGranted(topic: string, want: 0 | 1 | 2, granted: 0 | 1): ConnectionException {
    return new ConnectionException(NO_CID, MqttErrorCode.QosNotGranted,
        `MQTT broker granted QoS ${granted} for ${topic}, not the QoS ${want} asked: it does not support QoS ${want}; subscribe at QoS ${granted}`)
        .withDetails('topic', topic).withDetails('qos', want).withDetails('granted_qos', granted);
}

/**
 * Brings the broker's subscription to a filter in line with the filter's listeners: one
 * SUBSCRIBE at the highest QoS asked while there are listeners, one UNSUBSCRIBE when the last
 * one leaves. One reconciliation runs per filter at a time, so the broker sees a filter's
 * SUBSCRIBEs and UNSUBSCRIBEs in the order the listeners came and went.
 *
 * A subscribe() call waits for the SUBACK that covers its QoS. When the broker refuses, the
 * listeners at the refused QoS that the SUBSCRIBE was sent for and that still wait are removed
 * (their calls reject with `MQTT_SUBSCRIBE_REJECTED`); later rounds are only for listeners added
 * since. When only confirmed listeners are left, all at the refused QoS (a resubscription the
 * broker refuses after a reconnect: a cluster that lost a node may refuse for a while), they
 * stay: a warning is logged
 * at the first refusal, and the SUBSCRIBE is sent again after the reconnect backoff, at the
 * next reconnect, or when listeners come or go, until the broker grants it or the listeners
 * leave. Their subscribe() calls resolved long ago; nobody else could put them back.
 */
export class MqttFilterSync {
    /**
     * @param _broker  the connection to the broker.
     * @param _remove  removes a registration from the registry (a refused listener).
     * @param _settled called when a reconciliation ended, so an idle entry can be forgotten.
     */
    public constructor(
        private readonly _broker: MqttFilterBroker,
        private readonly _remove: (entry: MqttFilterEntry, registration: MqttRegistration) => void,
        private readonly _settled: (entry: MqttFilterEntry) => void,
    ) {}

    /**
     * Starts the reconciliation of an entry, or asks the one in progress to look again. The
     * promise settles (never rejects) once the entry needs nothing more from the broker.
     */
    public sync(entry: MqttFilterEntry): Promise<void> {
        if (entry.syncing) {
            entry.changed();
            return entry.syncing;
        }
        const run = (async (): Promise<void> => {
            try {
                // A change that came in while run() finished gets another round, within this promise.
                do await this.run(entry); while (entry.dirty);
            } finally {
                entry.syncingWith(null);
                this._settled(entry);
            }
        })();
        entry.syncingWith(run);
        return run;
    }

    private async run(entry: MqttFilterEntry): Promise<void> {
        const topic = entry.parsed.brokerFilter;
        for (;;) {
            entry.looked();
            const want = entry.wantedQos();
            if (entry.isSatisfied()) {
                if (entry.ceiling !== null) this.refuseAboveCeiling(entry, entry.ceiling);
                entry.settleCovered();
                if (entry.dirty) continue;
                return;
            }
            try {
                if (!this._broker.isConnected()) {
                    await this._broker.whenConnected();
                    // Listeners came or went while we waited for the connection: decide again.
                    if (entry.dirty) continue;
                }
                if (want === null) {
                    entry.unsubscribing();
                    let error: Error | null = null;
                    try {
                        await this._broker.unsubscribe(topic);
                    } catch (err) {
                        // A persistent session may still hold the subscription: UNSUBSCRIBE again after the reconnect.
                        if (this._broker.isLost(err) && this._broker.persistent) continue;
                        if (!this._broker.isLost(err)) error = err as Error;
                    }
                    // Dropped or refused, the broker's subscription is of no more use to anyone.
                    entry.unsubscribed(error);
                    continue;
                }
                const asked = new Set(entry.registrations.values());
                const verifying = entry.verify;
                const sentKey = entry.wantedOptionsKey();
                const { code, reasonString } = await this._broker.subscribe(topic, entry.brokerOptions(want), verifying);
                if ((code & 0x80) === 0) {
                    if (entry.refusals > 0) {
                        this._broker.logger.info(NO_CID, 'MQTT broker granted the subscription to %s again after %d refusals', topic, entry.refusals);
                    }
                    if (code < want) this.downgraded(entry, want, code as 0 | 1, sentKey, asked);
                    else entry.granted(want, sentKey);
                } else {
                    // A refused verification: the broker may hold nothing for this filter.
                    entry.refused(verifying);
                    if (this.refused(entry, want, code, asked, reasonString)) {
                        await entry.pause(this._broker.retryDelay(entry.refusals - 1), (wake) => this._broker.onNextLoss(wake));
                    }
                }
            } catch (err) {
                // Dropped before the answer: whenConnected() waits for the reconnect, then again.
                if (this._broker.isLost(err)) continue;
                if (err instanceof ApplicationException && err.code === MqttErrorCode.PoisonPacket) {
                    // The broker hangs up on this SUBSCRIBE each time: as good as a refusal.
                    entry.refused(entry.verify);
                    this.removeAsked(entry, want ?? 0, new Set(entry.registrations.values()), err);
                    continue;
                }
                this.failed(entry, want, err);
                return;
            }
        }
    }

    /**
     * The broker refused the filter at `qos`: remove the waiting listeners at that QoS that the
     * refused SUBSCRIBE was sent for (`asked`), or, when only confirmed ones are left and listeners at
     * a lower QoS would be served without them, those (with an error in the log). Listeners added
     * since get a SUBSCRIBE of their own. True when only confirmed listeners, all at the refused QoS,
     * were asked for: they stay, and the SUBSCRIBE is to be sent again.
     */
    private refused(entry: MqttFilterEntry, qos: 0 | 1 | 2, code: number, asked: Set<MqttRegistration>, reasonString?: string): boolean {
        const topic = entry.parsed.brokerFilter;
        const error = brokerRefusal(MqttErrorCode.SubscribeRejected, `MQTT broker rejected the subscription to ${topic}`, topic, code, reasonString);
        const top = [...entry.registrations.values()].filter((r) => r.subscription.qos === qos && asked.has(r));
        // Listeners at a lower QoS are served once the refused ones are gone: then they go, as a new listener's would.
        const lower = [...entry.registrations.values()].some((r) => r.subscription.qos < qos);
        if (top.length === 0 || lower || top.some((r) => !r.confirmed)) {
            this.removeAsked(entry, qos, asked, error);
            return false;
        }
        entry.refusedAgain();
        if (entry.refusals === 1) {
            this._broker.logger.warn(NO_CID, 'MQTT broker refused the subscription to %s again after a reconnect (%s); its %d listener(s) stay, ' +
                'and it is asked again with backoff until the broker grants it', topic, error.message, top.length);
        }
        return true;
    }

    /**
     * Removes the listeners at `qos` that a refused SUBSCRIBE was sent for (`asked`), those still
     * waiting first (their calls reject with `error`); when only confirmed ones are left, those, with `error` in the log.
     */
    private removeAsked(entry: MqttFilterEntry, qos: 0 | 1 | 2, asked: Set<MqttRegistration>, error: Error): void {
        const topic = entry.parsed.brokerFilter;
        const top = [...entry.registrations.values()].filter((r) => r.subscription.qos === qos && asked.has(r));
        if (top.length === 0) return;
        const waiting = top.filter((r) => !r.confirmed);
        const victims = waiting.length > 0 ? waiting : top;
        this.remove(entry, victims, error);
        if (waiting.length === 0) {
            this._broker.logger.error(NO_CID, error, 'MQTT broker refused the subscription to %s again after a reconnect; removed its %d listener(s) at QoS %d',
                topic, victims.length, qos);
        }
    }

    /**
     * The broker granted less than asked (a broker without QoS 2 grants 1): the messages would
     * come at the lower QoS, which is not what the listeners asked for. The waiting listeners
     * above the granted QoS that the SUBSCRIBE was sent for are removed (their calls reject with
     * `MQTT_QOS_NOT_GRANTED`); the others keep the subscription at the granted QoS. When only
     * confirmed listeners are left (a resubscription after a reconnect, to a broker that now grants
     * less), they stay, and the downgrade is logged as an error.
     */
    private downgraded(entry: MqttFilterEntry, want: 0 | 1 | 2, granted: 0 | 1, optionsKey: string | null, asked: Set<MqttRegistration>): void {
        const topic = entry.parsed.brokerFilter;
        const error = notGranted(topic, want, granted);
        const victims = [...entry.registrations.values()].filter((r) => asked.has(r) && !r.confirmed && r.subscription.qos > granted);
        // Without victims, the ceiling keeps the filter from being sent again and again for the same answer.
        entry.downgraded(granted, optionsKey, victims.length === 0);
        if (victims.length === 0) {
            this._broker.logger.error(NO_CID, error, 'MQTT broker granted QoS %d for %s after a reconnect; its listeners now get messages at that QoS',
                granted, topic);
            return;
        }
        this.remove(entry, victims, error);
    }

    /** Under a ceiling (see MqttFilterEntry.ceiling): listeners still waiting for more than the broker grants are refused. */
    private refuseAboveCeiling(entry: MqttFilterEntry, ceiling: 0 | 1): void {
        const above = [...entry.registrations.values()].filter((r) => !r.confirmed && r.subscription.qos > ceiling);
        if (above.length === 0) return;
        const want = Math.max(...above.map((r) => r.subscription.qos)) as 1 | 2;
        this.remove(entry, above, notGranted(entry.parsed.brokerFilter, want, ceiling));
    }

    /** Nothing pending will be answered (closed, down for good, client error): fail the waiting listeners. */
    private failed(entry: MqttFilterEntry, want: 0 | 1 | 2 | null, err: unknown): void {
        const topic = entry.parsed.brokerFilter;
        const error: ApplicationException = err instanceof ApplicationException
            ? err
            : wrapMqttError(err, MqttErrorCode.SubscribeRejected, `Failed to subscribe to MQTT topic ${topic}`, topic);
        if (want === null) entry.unsubscribeFailed(error);
        this.remove(entry, [...entry.registrations.values()].filter((r) => !r.confirmed), error);
        entry.rejectAllWaiters(error);
    }

    private remove(entry: MqttFilterEntry, registrations: MqttRegistration[], error: Error): void {
        for (const registration of registrations) {
            this._remove(entry, registration);
            entry.rejectWaiter(registration, error);
        }
    }
}
