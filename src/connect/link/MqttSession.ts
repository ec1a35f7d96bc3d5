import type { IClientPublishOptions, IClientSubscribeOptions, IConnackPacket, IDisconnectPacket, IPublishPacket, MqttClient, Packet } from 'mqtt';
import { ApplicationException, BadRequestException, ConnectionException } from 'pip-services3-commons-nodex';
import type { CompositeCounters, CompositeLogger } from 'pip-services3-components-nodex';

import { NO_CID, cid } from '../../shared/pip';
import { endClient } from './endClient';
import { sessionOutlivesConnection, type MqttConnectionSettings } from '../config/MqttConnectionSettings';
import { MqttErrorCode } from '../errors/MqttErrorCode';
import { MqttBrokerSupport } from '../publish/MqttBrokerSupport';
import { MqttSendQuota } from '../publish/MqttSendQuota';
import { PendingPublish, PendingPublishes } from '../publish/PendingPublishes';
import { publishFits } from '../publish/publishPacketSize';
import { brokerRefusal, closedError, reasonCodeOf, reasonStringOf, toError, wrapMqttError } from '../errors/MqttErrors';
import { MqttFilterSync, type MqttBrokerOperations } from '../subscriptions/MqttFilterSync';
import type { MqttReconnector } from './MqttReconnector';
import type { MqttFilterEntry, MqttSubscriptions } from '../subscriptions/MqttSubscriptions';
import type { IMqttMessageListener } from '../IMqttMessageListener';
import { MqttUnroutedHold } from '../subscriptions/MqttUnroutedHold';

/** MQTT 5: the receive maximum of a broker that gives none (section 3.2.2.3.3). */
const DEFAULT_RECEIVE_MAXIMUM = 65535;

/** What a session needs from its connection; read on every use, since references can change. */
export interface MqttSessionHost {
    readonly logger: CompositeLogger;
    readonly counters: CompositeCounters;
    readonly subscriptions: MqttSubscriptions;
    /** Called once per change between connected and not. */
    connectedChanged(connected: boolean): void;
}

/**
 * One opened MQTT.js client and everything that lives as long as it: event handlers, message
 * dispatch, resubscription after a reconnect, and the signals that end pending operations.
 * Created by [[MqttConnection]] once the first CONNACK arrived; ended by its close().
 *
 * With a clean session the broker forgets the subscriptions whenever the connection drops. With
 * a persistent one it should keep them, but may not (a crash between two saves). Either way the
 * session subscribes every filter again after each reconnect.
 */
export class MqttSession {
    /**
     * The rejecters of the operations other than publishes (in `_publishes`) waiting on this
     * session, failed at end() or when the connection is lost for good. A set, not a race against
     * one long-lived promise: that promise would keep a reaction for every operation ever raced
     * against it.
     */
    private readonly _waiting = new Set<(err: Error) => void>();
    /** Resolves at the next CONNACK; replaced after each loss. */
    private _nextConnect: { promise: Promise<void>; resolve: () => void } | null = null;
    private _connected = true;
    private _lastError: string | null = null;
    /** MQTT 5: the QoS 1/2 publishes the broker accepts unacknowledged (its receive maximum). */
    private readonly _quota: MqttSendQuota;
    private _receiveMaximum = DEFAULT_RECEIVE_MAXIMUM;
    /** MQTT 5: the largest packet the broker accepts, when it said. */
    private _maximumPacketSize: number | undefined;
    /** The publishes handed to MQTT.js and not settled yet. */
    private readonly _publishes = new PendingPublishes();
    /** The highest QoS the broker takes, and what else it supports. */
    private readonly _support: MqttBrokerSupport;
    /** QoS 2 publishes not written yet, by the callback handed to MQTT.js (to learn their message id when written). */
    private readonly _qos2Unsent = new Map<unknown, PendingPublish>();
    /** MQTT 5: publishes waiting for a slot under the broker's receive maximum. */
    private _quotaWaiting = 0;
    private _lostAt = 0;
    /** Connection attempts since the connection was lost. */
    private _attempts = 0;
    /** With a persistent session: messages for filters no listener has yet; null with a clean session. */
    private readonly _unrouted: MqttUnroutedHold | null;
    private _droppingUnrouted = false;
    private readonly _lossWatchers = new Set<() => void>();
    private _reconnects = 0;
    private readonly _handlers: { event: string; handler: (...args: never[]) => void }[] = [];
    private readonly _filters: MqttFilterSync;
    /** Set by end(): what everything started afterwards rejects with. */
    private _ended: Error | null = null;

    public constructor(
        public readonly client: MqttClient,
        private readonly _host: MqttSessionHost,
        private readonly _settings: MqttConnectionSettings,
        private readonly _displayUri: string,
        private readonly _reconnector: MqttReconnector,
    ) {
        this._filters = new MqttFilterSync(this.brokerOperations(), _host.subscriptions);
        // MQTT 5 limits from the last CONNACK, kept while disconnected (MQTT.js forgets them at
        // the close), so publishes made offline are held to them too.
        this._quota = new MqttSendQuota(() => this._receiveMaximum);
        this._support = new MqttBrokerSupport(_settings.maxQos, _displayUri);
        const fromConnack = (properties: IConnackPacket['properties']): void => {
            this._receiveMaximum = properties?.receiveMaximum ?? DEFAULT_RECEIVE_MAXIMUM;
            this._maximumPacketSize = properties?.maximumPacketSize;
        };
        fromConnack(client.serverProperties);
        this._support.onFirstConnack(client.serverProperties);
        this.on('packetreceive', (packet: Packet) => {
            this._support.read(packet);
            if (packet.cmd !== 'connack') return;
            fromConnack(packet.properties);
            this._support.onConnack(packet);
            // Emitted before MQTT.js sends what it kept: a broker that now takes less than QoS 2 must not get those.
            if (this._support.max < 2) this.takeBackQos2(false);
        });
        this.on('packetsend', (packet: Packet) => {
            this._support.written(packet);
            if (packet.cmd === 'publish' && packet.qos === 2 && this._qos2Unsent.size > 0) this.qos2Written(packet.messageId);
        });
        this._unrouted = _settings.cleanSession ? null : new MqttUnroutedHold(_settings.maxOfflineMessages);
        this.on('message', (topic: string, payload: Buffer, packet: IPublishPacket) => this.dispatch(topic, payload, packet));
        this.on('connect', (connack: IConnackPacket) => this.onConnect(connack));
        this.on('close', () => {
            if (this._support.onClose()) this.takeBackQos2(true);
            this.onClose();
        });
        this.on('reconnect', () => {
            this._attempts++;
            this._host.counters.incrementOne('mqtt.reconnect_attempts');
            this._host.logger.debug(NO_CID, 'Reconnecting to MQTT broker at %s (attempt %d)', this._displayUri, this._attempts);
        });
        this.on('error', (err: Error) => {
            // Reconnect attempts repeat the same error: log each distinct one once per outage.
            if (err.message === this._lastError) return;
            this._lastError = err.message;
            this._host.logger.error(NO_CID, err, 'MQTT connection error at %s', this._displayUri);
        });
        this.on('disconnect', (packet: IDisconnectPacket) => {
            // MQTT 5: the broker says why it ends the connection (0x8E: another client took the session over, ...).
            const reasonString = reasonStringOf(null, packet);
            const reason = `reason code ${packet.reasonCode ?? 0}${reasonString !== undefined ? `: ${reasonString}` : ''}`;
            this._lastError = `the broker sent DISCONNECT (${reason})`;
            this._host.logger.warn(NO_CID, 'MQTT broker at %s sent DISCONNECT (%s)', this._displayUri, reason);
        });
    }

    private on<A extends unknown[]>(event: string, handler: (...args: A) => void): void {
        (this.client as unknown as { on(e: string, h: (...args: A) => void): void }).on(event, handler);
        this._handlers.push({ event, handler: handler as unknown as (...args: never[]) => void });
    }

    /** Settles like the promise, or rejects earlier when the session ends or the connection is lost for good. */
    public race<T>(promise: Promise<T>): Promise<T> {
        if (this._ended) {
            // Too late: the operation's own outcome no longer matters, but must not go unhandled.
            promise.catch(() => undefined);
            return Promise.reject(this._ended);
        }
        return new Promise<T>((resolve, reject) => {
            this._waiting.add(reject);
            promise.then((value) => {
                this._waiting.delete(reject);
                resolve(value);
            }, (err: Error) => {
                this._waiting.delete(reject);
                reject(err);
            });
        });
    }

    private failWaiting(err: Error): void {
        const waiting = [...this._waiting];
        this._waiting.clear();
        for (const reject of waiting) reject(err);
        for (const publish of this._publishes.takeAll()) publish.reject(err);
    }

    /**
     * True from the reconnect (once MQTT.js has resent the QoS 1/2 messages it kept) to the loss.
     * Until then MQTT.js queues new subscribes and publishes, so the session is not ready yet.
     */
    public get connected(): boolean {
        return this._connected;
    }

    /** True once end() has begun. */
    public get ended(): boolean {
        return this._ended !== null;
    }

    /** The MQTT protocol version: 3, 4 or 5. */
    public get protocolVersion(): 3 | 4 | 5 {
        return this._settings.protocolVersion;
    }

    /** The last connection error since the last CONNACK, or null. */
    public get lastError(): string | null {
        return this._lastError;
    }

    /** publish() calls not settled yet. */
    public get pendingPublishes(): number {
        return this._publishes.size + this._quotaWaiting;
    }

    /** Connection attempts since the connection was lost (0 while connected). */
    public get attempts(): number {
        return this._attempts;
    }

    /** The wait before the next connection attempt in ms while reconnecting, otherwise null. */
    public get nextAttemptDelay(): number | null {
        return this._connected || !this._settings.retryConnect ? null : this._reconnector.nextDelay;
    }

    /** Connections restored since the session began. */
    public get reconnects(): number {
        return this._reconnects;
    }

    /**
     * Publishes. While the connection is down and retry_connect is on, MQTT.js keeps the message
     * (QoS 0 too) and sends it after the reconnect, as long as fewer than `max_offline_messages`
     * publishes are waiting; with retry_connect off the call fails at once.
     */
    public publish(topic: string, data: Buffer | string, options: IClientPublishOptions): Promise<void> {
        try {
            this.checkUsable();
            if (!this._connected && this.pendingPublishes >= this._settings.maxOfflineMessages) {
                throw new ConnectionException(NO_CID, MqttErrorCode.OfflineLimit,
                    `MQTT connection to ${this._displayUri} is down and already holds ${this.pendingPublishes} messages ` +
                    `for the broker, the limit of options.max_offline_messages (${this._settings.maxOfflineMessages})`)
                    .withDetails('topic', topic).withDetails('limit', this._settings.maxOfflineMessages);
            }
            if (this._settings.protocolVersion === 5) this.checkPacketSize(topic, data, options);
            if ((options.qos ?? 0) > this._support.max) throw this._support.refusal(topic, options.qos ?? 0, 'publish');
            if (options.retain === true && this._support.lacks('retain')) throw this._support.featureRefusal(topic, 'retain', 'publish a retained message to');
        } catch (err) {
            return Promise.reject(toError(err));
        }
        if (this._ended) return Promise.reject(this._ended);
        if ((options.qos ?? 0) > 0 && this._settings.protocolVersion === 5) return this.publishInQuota(topic, data, options);
        return this.send(topic, data, options);
    }

    /**
     * Hands one publish to MQTT.js: settles with its callback, or earlier when the session ends or
     * the connection is lost for good, and counts it (`mqtt.publish_time`, `mqtt.published_messages`).
     * One promise, one callback and no extra turns: this is the hot path.
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
                this.client.publish(topic, data, options, callback);
            } catch (err) {
                this.settlePublish(pending, err);
            }
        });
    }

    /** MQTT.js called back (or threw): settles the publish unless end() or a loss failed it already. */
    private settlePublish(pending: PendingPublish, err: unknown, packet?: unknown): void {
        if (!this._publishes.remove(pending)) return;
        if (pending.callback !== null) this._qos2Unsent.delete(pending.callback);
        // No CounterTiming object per message: the elapsed time goes to the counters directly.
        const counters = this._host.counters;
        counters.endTiming('mqtt.publish_time', Date.now() - pending.started);
        if (err) {
            pending.reject(wrapMqttError(err, MqttErrorCode.PublishFailed, `Failed to publish to MQTT topic ${pending.topic}`, pending.topic, packet));
            return;
        }
        if (pending.qos === 2 && !this._support.qos2Acknowledged(packet)) {
            // A PUBACK: the broker took it as QoS 1. Not what was asked, and the caller must know.
            const error = this._support.refusal(pending.topic, 2, 'publish', 'at_least_once');
            this._host.logger.error(NO_CID, error, 'MQTT broker at %s does not support QoS 2', this._displayUri);
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
                await this.race(waiting).catch((err: unknown) => {
                    void waiting.then(() => quota.release());
                    throw wrapMqttError(err, MqttErrorCode.PublishFailed, `Failed to publish to MQTT topic ${topic}`, topic);
                });
            } finally {
                this._quotaWaiting--;
            }
        }
        try {
            // The broker may have shown meanwhile that it takes less (MqttBrokerSupport).
            if ((options.qos ?? 0) > this._support.max) throw this._support.refusal(topic, options.qos ?? 0, 'publish');
            await this.send(topic, data, options);
        } finally {
            quota.release();
        }
    }

    /**
     * MQTT 5: refuses a publish above the broker's maximum packet size (from its last CONNACK).
     * Sent, it would make the broker drop the connection, and MQTT.js would send it again after
     * every reconnect.
     */
    private checkPacketSize(topic: string, data: Buffer | string, options: IClientPublishOptions): void {
        const maximum = this._maximumPacketSize;
        if (maximum === undefined || publishFits(topic, data, options, maximum, this._settings.topicAliasMaximum > 0)) return;
        throw new BadRequestException(NO_CID, MqttErrorCode.InvalidPayload,
            `Invalid MQTT payload: the message does not fit in the broker's maximum packet size of ${maximum} bytes`)
            .withDetails('topic', topic).withDetails('limit', maximum);
    }

    /** Throws `MQTT_NOT_CONNECTED` when the connection is down and will not come back. */
    public checkUsable(): void {
        if (!this.client.connected && !this._settings.retryConnect) throw this.downForGood();
    }

    private downForGood(): ConnectionException {
        return new ConnectionException(NO_CID, MqttErrorCode.NotConnected,
            `MQTT connection to ${this._displayUri} is down and options.retry_connect is false`);
    }

    /**
     * Brings the broker's subscription to an entry's filter in line with its listeners (see
     * MqttFilterSync); never rejects. Waits for the connection while it is down.
     */
    public sync(entry: MqttFilterEntry): Promise<void> {
        return this._filters.sync(entry);
    }

    private brokerOperations(): MqttBrokerOperations {
        const host = this._host;
        return {
            isConnected: () => this.client.connected && !this._ended,
            whenConnected: () => this.whenConnected(),
            subscribe: async (topic, options, resubscribe) => {
                try {
                    const granted = await this.race(this.client.subscribeAsync(topic, this.resubscribeOptions(options, resubscribe)));
                    return { code: granted[0]?.qos ?? 0 };
                } catch (err) {
                    // MQTT.js rejects a SUBACK failure; the code is in the packet it attaches.
                    const code = reasonCodeOf(err);
                    if (code !== undefined) return { code, reasonString: reasonStringOf(err) };
                    throw err;
                }
            },
            unsubscribe: (topic) => this.unsubscribe(topic),
            isLost: (err) => !(err instanceof ApplicationException) && reasonCodeOf(err) === undefined && !this.client.connected,
            persistent: sessionOutlivesConnection(this._settings),
            get logger() { return host.logger; },
        };
    }

    private async unsubscribe(topic: string): Promise<void> {
        const packet = await this.race(this.client.unsubscribeAsync(topic));
        const code = reasonCodeOf({ packet });
        if (code !== undefined) {
            throw brokerRefusal(MqttErrorCode.UnsubscribeFailed, `MQTT broker rejected the unsubscription from ${topic}`, topic, code,
                reasonStringOf(null, packet));
        }
    }

    /**
     * MQTT 5: a filter sent again after a reconnect asks for retained messages only when the
     * broker did not still hold the subscription (retain handling 1), so a kept session does not
     * get them twice. A retain handling the caller chose stays.
     */
    private resubscribeOptions(options: IClientSubscribeOptions, resubscribe: boolean): IClientSubscribeOptions {
        if (!resubscribe || this._settings.protocolVersion !== 5 || options.rh !== undefined) return options;
        return { ...options, rh: 1 };
    }

    /**
     * Ends the session: pending operations reject with `MQTT_CLOSED` first, then the client is
     * ended (DISCONNECT when connected and idle) and our handlers are removed.
     */
    public async end(correlationId: string | null): Promise<void> {
        this._ended = closedError(cid(correlationId));
        this.failWaiting(this._ended);
        this._connected = false;
        this.notifyLoss();
        this._reconnector.stop();
        this.dropHeld();
        await endClient(this.client, true);
        for (const { event, handler } of this._handlers) {
            (this.client as unknown as { off(e: string, h: (...args: never[]) => void): void }).off(event, handler);
        }
        this._handlers.length = 0;
    }

    private whenConnected(): Promise<void> {
        if (this.client.connected) return Promise.resolve();
        if (!this._settings.retryConnect) return Promise.reject(this.downForGood());
        if (!this._nextConnect) {
            let resolve!: () => void;
            const promise = new Promise<void>((r) => { resolve = r; });
            this._nextConnect = { promise, resolve };
        }
        return this.race(this._nextConnect.promise);
    }

    private onConnect(connack: IConnackPacket): void {
        // MQTT.js emits 'connect' once it has resent what it kept: by then the connection may be
        // gone again (a broker that closes on a resent packet). The next CONNACK brings another.
        if (!this.client.connected) return;
        const attempts = this._attempts;
        this._attempts = 0;
        this._connected = true;
        this._lastError = null;
        this._reconnects++;
        this._host.counters.incrementOne('mqtt.reconnects');
        this._host.logger.info(NO_CID, 'Reconnected to MQTT broker at %s after %d ms offline (attempt %d)%s',
            this._displayUri, Date.now() - this._lostAt, attempts,
            this._settings.cleanSession ? '' : connack.sessionPresent ? '; the broker kept the session' : '; the broker had no session');
        const waiting = this._nextConnect;
        this._nextConnect = null;
        waiting?.resolve();
        // Subscribe every filter again: the broker has no session (a clean one, or it lost ours),
        // or says it kept it but may have lost subscriptions made since its last save. An identical
        // SUBSCRIBE replaces a subscription without interrupting it (MQTT 3.1.1, 3.8.4); the broker
        // does send its retained messages again.
        for (const entry of this._host.subscriptions.entries()) {
            if (connack.sessionPresent) entry.verify = true;
            else entry.brokerQos = null;
            void this.sync(entry);
        }
        this._host.connectedChanged(true);
    }

    /**
     * Calls `callback` once at the next loss of the connection or at end(). Returns a function
     * that cancels it (a set of callbacks, not a shared promise, so nothing piles up).
     */
    public onNextLoss(callback: () => void): () => void {
        this._lossWatchers.add(callback);
        return () => this._lossWatchers.delete(callback);
    }

    private notifyLoss(): void {
        const watchers = [...this._lossWatchers];
        this._lossWatchers.clear();
        for (const watcher of watchers) watcher();
    }

    /** Remembers that this process let go of a filter, so messages still coming for it are not held. */
    public released(matchFilter: string): void {
        this._unrouted?.released(matchFilter);
    }

    /** A QoS 2 PUBLISH was written: the first time for a publish of ours, its message id is now known. */
    private qos2Written(messageId: number | undefined): void {
        if (messageId === undefined) return;
        // The callback MQTT.js keeps is ours until its first resend, which wraps it.
        const entry = (this.client as unknown as { outgoing: Record<number, { cb?: unknown } | undefined> }).outgoing[messageId];
        const pending = this._qos2Unsent.get(entry?.cb);
        if (pending === undefined) return;
        pending.messageId = messageId;
        this._qos2Unsent.delete(entry?.cb);
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
        const client = this.client as unknown as {
            outgoing: Record<number, unknown>;
            outgoingStore: { _inflights?: unknown; del(packet: { messageId: number }, cb: () => void): void };
            _storeProcessingQueue?: { callback?: unknown }[];
            messageIdProvider: { deallocate(id: number): void };
        };
        const inflights = client.outgoingStore._inflights instanceof Map ? client.outgoingStore._inflights as Map<number, Packet> : null;
        const answered = (id: number | undefined): boolean => id !== undefined && inflights?.get(id)?.cmd === 'pubrel';
        const forget = (id: number): void => {
            if (client.outgoing[id]) {
                this.client.removeOutgoingMessage(id);
            } else {
                client.outgoingStore.del({ messageId: id }, () => undefined);
                client.messageIdProvider.deallocate(id);
            }
        };
        const doomed = this._publishes.toArray().filter((publish) => publish.qos === 2 && !answered(publish.messageId));
        for (const publish of doomed) {
            this._publishes.remove(publish);
            if (publish.callback !== null) this._qos2Unsent.delete(publish.callback);
            if (publish.messageId !== undefined) {
                forget(publish.messageId);
            } else {
                // Not written yet: still in MQTT.js's queue of publishes made while it was busy or offline.
                const queue = client._storeProcessingQueue;
                const at = queue?.findIndex((entry) => entry.callback === publish.callback) ?? -1;
                if (at >= 0) queue!.splice(at, 1);
            }
            publish.reject(this._support.refusal(publish.topic, 2, 'publish', closedOnThem || publish.messageId === undefined ? 'no' : 'unknown'));
        }
        // And any unanswered QoS 2 PUBLISH still stored (one whose publish() already settled, say).
        for (const packet of [...(inflights?.values() ?? [])]) {
            if (packet.cmd === 'publish' && packet.qos === 2 && packet.messageId !== undefined) forget(packet.messageId);
        }
        if (doomed.length > 0) {
            this._host.logger.error(NO_CID, this._support.refusal(doomed[0].topic, 2, 'publish', 'no'),
                'MQTT broker at %s takes no QoS 2; failed %d QoS 2 publish(es) it had not taken, QoS 2 is refused from now on',
                this._displayUri, doomed.length);
        }
    }

    /** The highest QoS the broker takes, as far as known (see MqttBrokerSupport). */
    public get maxQos(): 0 | 1 | 2 {
        return this._support.max;
    }

    /**
     * Checks a subscribe against what the broker supports: its QoS (maxQos), and (MQTT 5) the
     * wildcard and shared subscriptions and subscription identifiers its CONNACK says it lacks.
     * @throws UnsupportedException `MQTT_QOS_NOT_SUPPORTED` or `MQTT_FEATURE_NOT_SUPPORTED`.
     */
    public checkSubscribeSupport(topic: string, options: IClientSubscribeOptions, shared: boolean, wildcard: boolean): void {
        const qos = options.qos ?? 0;
        if (qos > this._support.max) throw this._support.refusal(topic, qos, 'subscribe');
        if (shared && this._support.lacks('shared_subscriptions')) throw this._support.featureRefusal(topic, 'shared_subscriptions', 'subscribe to');
        if (wildcard && this._support.lacks('wildcard_subscriptions')) throw this._support.featureRefusal(topic, 'wildcard_subscriptions', 'subscribe to');
        if (options.properties?.subscriptionIdentifier !== undefined && this._support.lacks('subscription_identifiers')) {
            throw this._support.featureRefusal(topic, 'subscription_identifiers', 'subscribe with a subscription identifier to');
        }
    }

    private onClose(): void {
        if (!this._connected) return;
        this._connected = false;
        this.notifyLoss();
        this._lostAt = Date.now();
        this._host.counters.incrementOne('mqtt.connection_losses');
        // A clean session: the broker forgets the subscriptions with the connection.
        if (!sessionOutlivesConnection(this._settings)) {
            for (const entry of this._host.subscriptions.entries()) entry.brokerQos = null;
        }
        if (this._settings.retryConnect) {
            this._host.logger.warn(NO_CID, 'Connection to MQTT broker at %s lost; reconnecting in %d ms, then with backoff up to %d ms',
                this._displayUri, this._reconnector.nextDelay, this._settings.maxReconnectTimeout);
            this._host.connectedChanged(false);
            return;
        }
        this._host.logger.warn(NO_CID, 'Connection to MQTT broker at %s lost; not reconnecting because options.retry_connect is false',
            this._displayUri);
        // Nothing pending will complete: QoS 1 and 2 messages in flight would wait forever.
        this.failWaiting(new ConnectionException(NO_CID, MqttErrorCode.NotConnected,
            `MQTT connection to ${this._displayUri} was lost and options.retry_connect is false`));
        this._host.connectedChanged(false);
    }

    /** Hands an incoming message to the listeners whose filters match it (or to the hold of a persistent session). */
    public dispatch(topic: string, payload: Buffer, packet: IPublishPacket): void {
        this._host.counters.incrementOne('mqtt.received_messages');
        const listeners = this._host.subscriptions.match(topic);
        if (listeners.length === 0 && this._unrouted) {
            this.holdUnrouted(topic, payload, packet);
            return;
        }
        for (const listener of listeners) this.deliver(listener, topic, payload, packet);
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

    /** At end(): what is still held was acknowledged to the broker and goes now; say so. */
    private dropHeld(): void {
        const held = this._unrouted?.size ?? 0;
        if (held === 0) return;
        this._unrouted!.clear();
        this._host.counters.increment('mqtt.dropped_messages', held);
        this._host.logger.warn(NO_CID, 'Closed the MQTT connection to %s with %d messages of its persistent session that no listener ' +
            'subscribed to; they are dropped', this._displayUri, held);
    }

    private holdUnrouted(topic: string, payload: Buffer, packet: IPublishPacket): void {
        const hold = this._unrouted!;
        // A topic of a filter this process unsubscribed: nobody here wants it any more (it may also
        // match an older filter of the session, but a PUBLISH does not say which: counted as dropped).
        if (hold.wasReleased(topic)) {
            this._host.counters.incrementOne('mqtt.dropped_messages');
            return;
        }
        if (hold.hold({ topic, payload, packet })) return;
        this._host.counters.incrementOne('mqtt.dropped_messages');
        if (this._droppingUnrouted) return;
        this._droppingUnrouted = true;
        this._host.logger.warn(NO_CID, 'MQTT broker at %s sent messages for topics no listener subscribes to (the persistent session ' +
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
        const error = toError(err);
        this._host.logger.error(NO_CID, error, 'MQTT message listener failed on topic %s', topic);
    }
}
