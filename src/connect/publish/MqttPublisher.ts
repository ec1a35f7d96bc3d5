import type { IClientPublishOptions, Packet } from 'mqtt';
import { ConnectionException } from 'pip-services3-commons-nodex';

import { NO_CID, type MqttReporting } from '../../shared/pip';
import type { MqttConnectionSettings } from '../config/MqttConnectionSettings';
import { MqttErrorCode } from '../errors/MqttErrorCode';
import { toError, wrapMqttError } from '../errors/MqttErrors';
import type { MqttLink } from '../link/MqttLink';
import { storedPackets, storeProcessingQueue } from '../link/mqttInternals';
import { MqttBrokerSupport } from './MqttBrokerSupport';
import { MqttSendQuota } from './MqttSendQuota';
import { PendingPublish, PendingPublishes } from './PendingPublishes';

/**
 * The publish pipeline of one link: the offline limit, what the broker takes (see
 * [[MqttBrokerSupport]]), the MQTT 5 receive maximum, handing the publish to MQTT.js, and
 * settling it with the broker's answer, or earlier when the link fails (close(), or down for
 * good). It also takes back from MQTT.js the QoS 2 publishes of a broker found to take no QoS 2.
 *
 * While the link is not up (lost, or back but MQTT.js still resending what it kept) and
 * retry_connect is on, the publisher holds the message itself (QoS 0 too) and hands it to MQTT.js
 * once the link is up again, as long as fewer than `max_offline_messages` publishes are waiting;
 * with retry_connect off the call fails at once. Not MQTT.js: a publish it queues while it resends
 * fails with "Connection closed" when the link drops again before the resend ends.
 */
export class MqttPublisher {
    /** The highest QoS the broker takes, its limits, and what else it supports. */
    public readonly support: MqttBrokerSupport;
    /** MQTT 5: the QoS 1/2 publishes the broker accepts unacknowledged (its receive maximum). */
    private readonly _quota: MqttSendQuota;
    /** The publishes handed to MQTT.js and not settled yet. */
    private readonly _publishes = new PendingPublishes();
    /** QoS 2 publishes not written yet, by the callback handed to MQTT.js (to learn their message id when written). */
    private readonly _qos2Unsent = new Map<unknown, PendingPublish>();
    /** MQTT 5: publishes waiting for a slot under the broker's receive maximum. */
    private _quotaWaiting = 0;
    /** Publishes made while the link was not up, in order, for release(). */
    private _held: HeldPublish[] = [];
    /** Set while poisoned() takes a publish back: what its callback's "Message removed" becomes. */
    private _takingBack: Error | null = null;

    public constructor(
        private readonly _link: MqttLink,
        private readonly _settings: MqttConnectionSettings,
        private readonly _reporting: MqttReporting,
    ) {
        const support = this.support = new MqttBrokerSupport(_settings.maxQos, _link.displayUri, _settings.protocolVersion,
            _settings.topicAliasMaximum > 0);
        this._quota = new MqttSendQuota(() => support.receiveMaximum);
        support.onFirstConnack(_link.client.serverProperties);
        _link.on('packetreceive', (packet: Packet) => {
            support.read(packet);
            if (packet.cmd !== 'connack') return;
            support.onConnack(packet);
            // Emitted before MQTT.js sends what it kept: a broker that now takes less than QoS 2 must not get those.
            if (support.max < 2) this.takeBackQos2(false);
        });
        _link.on('packetsend', (packet: Packet) => {
            support.written(packet);
            if (packet.cmd === 'publish' && packet.qos === 2 && this._qos2Unsent.size > 0) this.qos2Written(packet.messageId);
        });
    }

    /** publish() calls not settled yet. */
    public get pendingPublishes(): number {
        return this._publishes.size + this._quotaWaiting + this._held.length;
    }

    /**
     * The link is up: the held publishes go to MQTT.js, in the order they were made, each checked
     * again against what the broker now takes.
     */
    public release(): void {
        const held = this._held;
        this._held = [];
        for (const { topic, data, options, resolve, reject } of held) {
            try {
                this.support.checkPublish(topic, data, options);
            } catch (err) {
                reject(toError(err));
                continue;
            }
            this.dispatch(topic, data, options).then(resolve, reject);
        }
    }

    /** The socket closed: a broker that closes on each QoS 2 publish gets none of them again. */
    public closed(): void {
        if (this.support.onClose()) this.takeBackQos2(true);
    }

    /** Nothing pending will complete: every publish not settled yet rejects with `err`. */
    public failAll(err: Error): void {
        const held = this._held;
        this._held = [];
        for (const publish of held) publish.reject(err);
        for (const publish of this._publishes.takeAll()) publish.reject(err);
    }

    /** Publishes; the caller checked the input (topic, payload, options). */
    public publish(topic: string, data: Buffer | string, options: IClientPublishOptions): Promise<void> {
        const link = this._link;
        try {
            link.checkUsable();
            if (!link.connected && this.pendingPublishes >= this._settings.maxOfflineMessages) {
                throw new ConnectionException(NO_CID, MqttErrorCode.OfflineLimit,
                    `MQTT connection to ${link.displayUri} is down and already holds ${this.pendingPublishes} messages ` +
                    `for the broker, the limit of options.max_offline_messages (${this._settings.maxOfflineMessages})`)
                    .withDetails('topic', topic).withDetails('limit', this._settings.maxOfflineMessages);
            }
            this.support.checkPublish(topic, data, options);
        } catch (err) {
            return Promise.reject(toError(err));
        }
        const ended = link.endedError;
        if (ended) return Promise.reject(ended);
        if (!link.connected) {
            return new Promise<void>((resolve, reject) => { this._held.push({ topic, data, options, resolve, reject }); });
        }
        return this.dispatch(topic, data, options);
    }

    /** Hands a publish to MQTT.js: MQTT 5 QoS 1 and 2 under the broker's receive maximum. */
    private dispatch(topic: string, data: Buffer | string, options: IClientPublishOptions): Promise<void> {
        if ((options.qos ?? 0) > 0 && this._settings.protocolVersion === 5) return this.publishInQuota(topic, data, options);
        return this.send(topic, data, options);
    }

    /**
     * Hands one publish to MQTT.js: settles with its callback, or earlier when the link fails,
     * and counts it (`mqtt.publish_time`, `mqtt.published_messages`). One promise, one callback
     * and no extra turns: this is the hot path.
     */
    private send(topic: string, data: Buffer | string, options: IClientPublishOptions): Promise<void> {
        return new Promise<void>((resolve, reject) => {
            const qos = options.qos ?? 0;
            const pending = new PendingPublish(topic, Date.now(), resolve, reject, qos);
            this._publishes.add(pending);
            try {
                // The callback form: MQTT.js passes the PUBACK or PUBREC beside the error, with its reason string.
                const callback = (err?: Error, packet?: Packet): void => this.settlePublish(pending, err, packet);
                if (qos === 2) {
                    pending.callback = callback;
                    this._qos2Unsent.set(callback, pending);
                }
                this._link.client.publish(topic, data, options, callback);
            } catch (err) {
                this.settlePublish(pending, err);
            }
        });
    }

    /** MQTT.js called back (or threw): settles the publish unless the link failed it already. */
    private settlePublish(pending: PendingPublish, err: unknown, packet?: unknown): void {
        if (!this._publishes.remove(pending)) return;
        if (pending.callback !== null) this._qos2Unsent.delete(pending.callback);
        // No CounterTiming object per message: the elapsed time goes to the counters directly.
        const counters = this._reporting.counters;
        counters.endTiming('mqtt.publish_time', Date.now() - pending.started);
        if (err) {
            if (this._takingBack !== null) {
                pending.reject(this._takingBack);
                return;
            }
            pending.reject(wrapMqttError(err, MqttErrorCode.PublishFailed, `Failed to publish to MQTT topic ${pending.topic}`, pending.topic, packet));
            return;
        }
        if (pending.qos === 2 && !this.support.qos2Acknowledged(packet)) {
            // A PUBACK: the broker took it as QoS 1. Not what was asked, and the caller must know.
            const error = this.support.refusal(pending.topic, 2, 'publish', 'at_least_once');
            this._reporting.logger.error(NO_CID, error, 'MQTT broker at %s does not support QoS 2', this._link.displayUri);
            pending.reject(error);
            return;
        }
        counters.incrementOne('mqtt.published_messages');
        pending.resolve();
    }

    /** MQTT 5, QoS 1 or 2: waits for a slot under the broker's receive maximum first. */
    private async publishInQuota(topic: string, data: Buffer | string, options: IClientPublishOptions): Promise<void> {
        const quota = this._quota;
        const waiting = quota.acquire();
        if (waiting) {
            this._quotaWaiting++;
            try {
                // Closed while waiting: the slot given later goes straight back.
                await this._link.race(waiting).catch((err: unknown) => {
                    void waiting.then(() => quota.release());
                    throw wrapMqttError(err, MqttErrorCode.PublishFailed, `Failed to publish to MQTT topic ${topic}`, topic);
                });
            } finally {
                this._quotaWaiting--;
            }
        }
        try {
            // The broker may have shown meanwhile that it takes less (MqttBrokerSupport).
            this.support.checkQos(topic, options.qos ?? 0, 'publish');
            await this.send(topic, data, options);
        } finally {
            quota.release();
        }
    }

    /** A QoS 2 PUBLISH was written: the first time for a publish of ours, its message id is now known. */
    private qos2Written(messageId: number | undefined): void {
        if (messageId === undefined) return;
        // The callback MQTT.js keeps is ours until its first resend, which wraps it.
        const entry = this._link.client.outgoing[messageId] as { cb?: unknown } | undefined;
        const pending = this._qos2Unsent.get(entry?.cb);
        if (pending === undefined) return;
        pending.messageId = messageId;
        this._qos2Unsent.delete(entry?.cb);
    }

    /**
     * A stored PUBLISH is poison (see MqttPoisonWatch): MQTT.js forgets it, and its publish(),
     * when still waiting, rejects with `error`.
     */
    public poisoned(messageId: number, error: Error): void {
        this._takingBack = error;
        try {
            this.forget(messageId);
        } finally {
            this._takingBack = null;
        }
    }

    /**
     * Takes a stored publish out of MQTT.js: out of its table and store, its message id free.
     * Its callback, when MQTT.js has one, is called at once with "Message removed".
     */
    private forget(id: number): void {
        const client = this._link.client;
        if (client.outgoing[id]) {
            client.removeOutgoingMessage(id);
        } else {
            client.outgoingStore.del({ messageId: id }, () => undefined);
            client.messageIdProvider.deallocate(id);
        }
    }

    /**
     * The broker takes no QoS 2 (see MqttBrokerSupport): the QoS 2 publishes it has not answered
     * with PUBREC fail with `MQTT_QOS_NOT_SUPPORTED` and are taken back from MQTT.js, which would
     * send them after every reconnect (and a broker that closes the connection on them would get
     * them forever). Those it answered keep going: their PUBREL is allowed at any QoS.
     * @param closedOnThem the broker closed the connection on them, so it did not take them
     *   (`delivered` `no`); otherwise one written before may have arrived (`unknown`).
     */
    private takeBackQos2(closedOnThem: boolean): void {
        const client = this._link.client;
        const inflights = storedPackets(client.outgoingStore);
        const answered = (id: number | undefined): boolean => id !== undefined && inflights?.get(id)?.cmd === 'pubrel';
        const doomed = this._publishes.toArray().filter((publish) => publish.qos === 2 && !answered(publish.messageId));
        for (const publish of doomed) {
            this._publishes.remove(publish);
            if (publish.callback !== null) this._qos2Unsent.delete(publish.callback);
            if (publish.messageId !== undefined) {
                this.forget(publish.messageId);
            } else {
                // Not written yet: still in MQTT.js's queue of publishes made while it was busy or offline.
                const queue = storeProcessingQueue(client);
                const at = queue?.findIndex((entry) => entry.callback === publish.callback) ?? -1;
                if (at >= 0) queue!.splice(at, 1);
            }
            publish.reject(this.support.refusal(publish.topic, 2, 'publish', closedOnThem || publish.messageId === undefined ? 'no' : 'unknown'));
        }
        // And any unanswered QoS 2 PUBLISH still stored (one whose publish() already settled, say).
        for (const packet of [...(inflights?.values() ?? [])]) {
            if (packet.cmd === 'publish' && packet.qos === 2 && packet.messageId !== undefined) this.forget(packet.messageId);
        }
        if (doomed.length > 0) {
            this._reporting.logger.error(NO_CID, this.support.refusal(doomed[0].topic, 2, 'publish', 'no'),
                'MQTT broker at %s takes no QoS 2; failed %d QoS 2 publish(es) it had not taken, QoS 2 is refused from now on',
                this._link.displayUri, doomed.length);
        }
    }
}

/** A publish made while the link was not up: see MqttPublisher.release(). */
interface HeldPublish {
    readonly topic: string;
    readonly data: Buffer | string;
    readonly options: IClientPublishOptions;
    readonly resolve: () => void;
    readonly reject: (err: Error) => void;
}
