import { Socket } from 'node:net';

import { connect, type IClientSubscribeOptions, type IConnackPacket, type IDisconnectPacket, type IPublishPacket, type MqttClient, type Packet } from 'mqtt';
import { ApplicationException, ConnectionException } from 'pip-services3-commons-nodex';
import type { ILogger } from 'pip-services3-components-nodex';

import { cid, NO_CID, type MqttReporting } from '../../shared/pip';
import type { MqttConnectionSettings } from '../config/MqttConnectionSettings';
import { MqttErrorCode } from '../errors/MqttErrorCode';
import { brokerRefusal, closedError, poisonPacket, reasonCodeOf, reasonStringOf } from '../errors/MqttErrors';
import type { MqttSubscriptionLink } from '../subscriptions/MqttSubscriptions';
import { toClientOptions } from './clientOptions';
import { endClient } from './endClient';
import { MqttAcknowledgements } from './MqttAcknowledgements';
import { rearmConnackTimeout, restartServerRotation } from './mqttInternals';
import { CLOSES_TO_POISON, type MqttPoison, MqttPoisonWatch } from './MqttPoisonWatch';
import { backoffDelay, MqttReconnector } from './MqttReconnector';
import { waitForConnack } from './waitForConnack';

/** What the link tells the connection's other parts, in the order the link decides. */
export interface MqttLinkEvents {
    /** A message arrived (from the first CONNACK on: a kept session sends its queue right behind it). */
    message(topic: string, payload: Buffer, packet: IPublishPacket): void;
    /** The socket closed, before the link handles the loss (every close, not only the first of an outage). */
    closed(): void;
    /** The connection was lost; `sessionKept`: the broker keeps the session (and its subscriptions). */
    lost(sessionKept: boolean): void;
    /** The connection is back: CONNACK, and MQTT.js has resent what it kept. */
    resumed(sessionPresent: boolean): void;
    /** Nothing pending will complete: the link ends (close()) or the connection is down for good (no retry_connect). */
    failed(err: Error): void;
    /**
     * A stored QoS 1/2 PUBLISH is poison (see [[MqttPoisonWatch]]): take it out of MQTT.js and fail
     * its publish() with `error`. Told after MQTT.js has handled the close, before it reconnects.
     */
    poisoned(messageId: number, error: Error): void;
}

/**
 * The live connection to the broker: the MQTT.js client and its life from the first CONNACK to
 * the end. It is the one place that decides what a connection loss and a reconnect do: it keeps
 * the state (connected, attempts, last error), logs and counts each change once, fails what
 * waits when the connection is down for good or ends, and tells the rest in [[MqttLinkEvents]]:
 * the subscriptions resubscribe when told `resumed`, the publisher drops its publishes when told
 * `failed`. MQTT.js reconnects (with [[MqttReconnector]]'s backoff) and resends its stored QoS 1/2
 * messages; the link only watches it.
 */
export class MqttLink implements MqttSubscriptionLink {
    /** The rejecters of the operations waiting on this link (see race()). */
    private readonly _waiting = new Set<(err: Error) => void>();
    /** Resolves at the next CONNACK; replaced after each loss. */
    private _nextConnect: { promise: Promise<void>; resolve: () => void } | null = null;
    private _connected = true;
    private _lastError: string | null = null;
    private _lostAt = 0;
    /** Connection attempts since the connection was lost. */
    private _attempts = 0;
    private _reconnects = 0;
    private readonly _lossWatchers = new Set<() => void>();
    private readonly _handlers: { event: string; handler: (...args: never[]) => void }[] = [];
    /** Set by end(): what everything started afterwards rejects with. */
    private _ended: Error | null = null;
    /** True while lastError tells of a poison packet: a reconnect does not clear it, another error does. */
    private _lastErrorIsPoison = false;
    private readonly _poisonWatch: MqttPoisonWatch;

    /**
     * Creates the MQTT.js client and waits for its first CONNACK (see [[waitForConnack]]). When
     * that fails, it leaves no client, timer or reconnect loop behind.
     *
     * @param signal aborts the wait for the first CONNACK with its reason (a close() meanwhile).
     * @throws ConnectionException `MQTT_CONNECT_FAILED`, `MQTT_CONNECT_TIMEOUT`, `MQTT_CONNECT_REFUSED` or
     *   `MQTT_TLS_FAILED`, or the signal's reason.
     */
    public static async start(
        correlationId: string | null, settings: MqttConnectionSettings, reporting: MqttReporting, events: MqttLinkEvents, signal: AbortSignal,
    ): Promise<MqttLink> {
        const { connection } = settings;
        // Built without connecting, so that the client is ours to end when its first connect()
        // throws (mqtt-packet refusing to write the CONNECT, say): it has a socket and timers by then.
        let client: MqttClient | undefined;
        try {
            // Set on the object itself: a copy would turn its servername getter into a fixed value.
            const options = toClientOptions(settings);
            options.manualConnect = true;
            client = connect(options);
            // Only the first connect() is ours: MQTT.js reads the option again in end().
            client.options.manualConnect = false;
            client.connect();
        } catch (err) {
            if (client !== undefined) await endClient(client, false);
            throw new ConnectionException(cid(correlationId), MqttErrorCode.ConnectFailed,
                `Cannot connect to MQTT broker at ${connection.displayUri}: ${(err as Error).message}`).withCause(err as Error);
        }
        followServerKeepAlive(client);
        // From the first CONNACK on: a broker that kept the session sends its queue right behind it.
        const acknowledgements = new MqttAcknowledgements(client);
        const onMessage = (topic: string, payload: Buffer, packet: IPublishPacket): void => {
            acknowledgements.emitting = packet;
            try {
                events.message(topic, payload, packet);
            } finally {
                acknowledgements.emitting = null;
            }
        };
        client.on('message', onMessage);
        const reconnector = new MqttReconnector(client, settings.reconnectTimeout, settings.maxReconnectTimeout, {
            onStalled: (idleMs) => {
                reporting.counters.incrementOne('mqtt.watchdog_restarts');
                reporting.logger.warn(NO_CID, 'MQTT client for %s made no connection attempt for %d ms; the watchdog restarted it',
                    connection.displayUri, idleMs);
            },
        });
        try {
            await waitForConnack(client, {
                correlationId,
                displayUri: connection.displayUri,
                connectTimeout: settings.connectTimeout,
                retry: settings.retryConnect,
                attempts: connection.servers.length,
                signal,
            });
        } catch (err) {
            client.off('message', onMessage);
            reconnector.stop();
            await endClient(client, false);
            throw err;
        }
        // MQTT 5: a broker-assigned client id. MQTT.js does not keep it, so reconnects would send an
        // empty id again and get a new session; with it they resume this one.
        const assigned = client.serverProperties?.assignedClientIdentifier;
        if (settings.brokerAssignsClientId && typeof assigned === 'string' && assigned !== '') client.options.clientId = assigned;
        // Failover servers are tried through MQTT.js reconnects; without retry_connect, no more of them.
        if (!settings.retryConnect) reconnector.disable();
        // MQTT 5 with a session expiry: a clean start at open(), and reconnects resume the session.
        if (settings.sessionOutlivesConnection) client.options.clean = false;
        const link = new MqttLink(client, settings, reporting, events, reconnector, acknowledgements);
        link._handlers.push({ event: 'message', handler: onMessage });
        return link;
    }

    private constructor(
        public readonly client: MqttClient,
        private readonly _settings: MqttConnectionSettings,
        private readonly _reporting: MqttReporting,
        private readonly _events: MqttLinkEvents,
        private readonly _reconnector: MqttReconnector,
        /** Acknowledgement after processing: see [[MqttAcknowledgements]]. */
        public readonly acknowledgements: MqttAcknowledgements,
    ) {
        this.on('close', () => acknowledgements.closed());
        this._poisonWatch = new MqttPoisonWatch((event, handler) => this.on(event, handler), (poison) => this.onPoison(poison));
        this.on('connect', (connack: IConnackPacket) => this.onConnect(connack));
        this.on('close', () => {
            // A broker that hangs up says nothing: without this, the status would show no reason at all.
            if (this._lastError === null) this.setLastError('the connection was closed (by the broker or the network)');
            this._events.closed();
            this.onClose();
        });
        if (_settings.connection.servers.length > 1) {
            this.on('reconnect', () => process.nextTick(() => this.waitLongerOnceAccepted()));
            // The watchdog must not take such an attempt for a stuck one.
            _reconnector.longestAttempt = _settings.connectTimeout;
        }
        this.on('reconnect', () => {
            this._attempts++;
            this._reporting.counters.incrementOne('mqtt.reconnect_attempts');
            this._reporting.logger.debug(NO_CID, 'Reconnecting to MQTT broker at %s (attempt %d)', this.displayUri, this._attempts);
        });
        this.on('error', (err: Error) => {
            // Reconnect attempts repeat the same error: log each distinct one once per outage.
            if (err.message === this._lastError) return;
            this.setLastError(err.message);
            this._reporting.logger.error(NO_CID, err, 'MQTT connection error at %s', this.displayUri);
        });
        this.on('disconnect', (packet: IDisconnectPacket) => {
            // MQTT 5: the broker says why it ends the connection (0x8E: another client took the session over, ...).
            const reasonString = reasonStringOf(null, packet);
            const reason = `reason code ${packet.reasonCode ?? 0}${reasonString !== undefined ? `: ${reasonString}` : ''}`;
            this.setLastError(`the broker sent DISCONNECT (${reason})`);
            this._reporting.logger.warn(NO_CID, 'MQTT broker at %s sent DISCONNECT (%s)', this.displayUri, reason);
        });
    }

    /**
     * A reconnect to one of several servers gets a 1/N share of connect_timeout, so that a server
     * that never accepts costs little before the next is tried. Once the server has accepted the
     * connection it is there and working on the CONNECT (a cluster node waits for its leader
     * election before it answers): from then on the attempt gets the whole connect_timeout. Only
     * after open(), whose own wait the shares keep within connect_timeout. Called just after
     * MQTT.js started the attempt (it builds the socket within its 'reconnect').
     */
    private waitLongerOnceAccepted(): void {
        const socket = this.client.stream;
        if (!(socket instanceof Socket) || !socket.connecting || this._ended) return;
        socket.once('connect', () => {
            if (this.client.stream === socket && !this.client.connected && !this._ended) {
                rearmConnackTimeout(this.client, this._settings.connectTimeout);
            }
        });
    }

    /** Adds a handler to a client event for as long as the link lives (end() removes it). */
    public on<A extends unknown[]>(event: string, handler: (...args: A) => void): void {
        (this.client as unknown as { on(e: string, h: (...args: A) => void): void }).on(event, handler);
        this._handlers.push({ event, handler: handler as unknown as (...args: never[]) => void });
    }

    /** The broker addresses, for messages (no credentials). */
    public get displayUri(): string {
        return this._settings.connection.displayUri;
    }

    /** The logger, for what the subscriptions report. */
    public get logger(): ILogger {
        return this._reporting.logger;
    }

    /**
     * True from the reconnect (once MQTT.js has resent the QoS 1/2 messages it kept) to the loss.
     * Until then MQTT.js queues new subscribes and publishes, so the link is not ready yet.
     */
    public get connected(): boolean {
        return this._connected;
    }

    /** True once end() has begun. */
    public get ended(): boolean {
        return this._ended !== null;
    }

    /** What operations started after end() reject with, or null. */
    public get endedError(): Error | null {
        return this._ended;
    }

    /** The last connection error since the last CONNACK, or the last poison packet found since, or null. */
    public get lastError(): string | null {
        return this._lastError;
    }

    private setLastError(message: string, poison = false): void {
        this._lastError = message;
        this._lastErrorIsPoison = poison;
    }

    /**
     * The broker closed the connection on the same packet again and again: it fails with
     * `MQTT_POISON_PACKET` and is not sent again (a PUBLISH is taken out of MQTT.js's store, a
     * SUBSCRIBE's call fails instead of trying again), and the connection goes on.
     */
    private onPoison(poison: MqttPoison): void {
        const error = poisonPacket(this.displayUri, poison.cmd, poison.topic, CLOSES_TO_POISON);
        this.setLastError(error.message, true);
        this._reporting.counters.incrementOne('mqtt.poison_packets');
        this._reporting.logger.error(NO_CID, error, 'MQTT broker at %s closes the connection on a %s to %s; it is not sent again',
            this.displayUri, poison.cmd.toUpperCase(), poison.topic);
        if (poison.cmd !== 'publish') return;
        const { messageId } = poison;
        // MQTT.js is still handling the close: its resend stream goes away first.
        setImmediate(() => {
            if (!this._ended) this._events.poisoned(messageId, error);
        });
    }

    /** Connection attempts since the connection was lost (0 while connected). */
    public get attempts(): number {
        return this._attempts;
    }

    /** The wait before the next connection attempt in ms while reconnecting, otherwise null. */
    public get nextAttemptDelay(): number | null {
        return this._connected || !this._settings.retryConnect ? null : this._reconnector.nextDelay;
    }

    /** The reconnect backoff, for a SUBSCRIBE the broker refused `attempt` + 1 times in a row after a reconnect. */
    public retryDelay(attempt: number): number {
        return backoffDelay(attempt, this._settings.reconnectTimeout, this._settings.maxReconnectTimeout);
    }

    /** Connections restored since the link began. */
    public get reconnects(): number {
        return this._reconnects;
    }

    /** True when the broker keeps subscriptions across disconnects (MqttFilterSync). */
    public get persistent(): boolean {
        return this._settings.sessionOutlivesConnection;
    }

    /** Settles like the promise, or rejects earlier when the link ends or the connection is lost for good. */
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
        this._events.failed(err);
    }

    /** Throws `MQTT_NOT_CONNECTED` when the connection is down and will not come back. */
    public checkUsable(): void {
        if (!this.client.connected && !this._settings.retryConnect) throw this.downForGood();
    }

    private downForGood(): ConnectionException {
        return new ConnectionException(NO_CID, MqttErrorCode.NotConnected,
            `MQTT connection to ${this.displayUri} is down and options.retry_connect is false`);
    }

    /** True while the client can send (whenConnected() would resolve at once). */
    public isConnected(): boolean {
        return this.client.connected && !this._ended;
    }

    /** Resolves when connected; rejects `MQTT_CLOSED` at end(), `MQTT_NOT_CONNECTED` when down for good. */
    public whenConnected(): Promise<void> {
        if (this.client.connected) return Promise.resolve();
        if (!this._settings.retryConnect) return Promise.reject(this.downForGood());
        if (!this._nextConnect) {
            let resolve!: () => void;
            const promise = new Promise<void>((r) => { resolve = r; });
            this._nextConnect = { promise, resolve };
        }
        return this.race(this._nextConnect.promise);
    }

    /** True for an error caused by the connection dropping under the operation. */
    public isLost(err: unknown): boolean {
        return !(err instanceof ApplicationException) && reasonCodeOf(err) === undefined && !this.client.connected;
    }

    /**
     * Sends SUBSCRIBE; resolves with the SUBACK code (0x80 and up: refused) and the broker's reason
     * string. MQTT 5: a filter sent again after a reconnect (`resubscribe`) asks for retained messages
     * only when the broker did not still hold the subscription (retain handling 1), so a kept session
     * does not get them twice. A retain handling the caller chose stays.
     */
    public async subscribe(topic: string, options: IClientSubscribeOptions, resubscribe: boolean): Promise<{ code: number; reasonString?: string }> {
        const sent = resubscribe && this._settings.protocolVersion === 5 && options.rh === undefined ? { ...options, rh: 1 as const } : options;
        try {
            const granted = await this.race(this.client.subscribeAsync(topic, sent));
            return { code: granted[0]?.qos ?? 0 };
        } catch (err) {
            // MQTT.js rejects a SUBACK failure; the code is in the packet it attaches.
            const code = reasonCodeOf(err);
            if (code !== undefined) return { code, reasonString: reasonStringOf(err) };
            // Dropped under it, for the last time: the broker keeps closing the connection on this SUBSCRIBE.
            if (this.isLost(err) && this._poisonWatch.takePoisonFilter(topic)) {
                throw poisonPacket(this.displayUri, 'subscribe', topic, CLOSES_TO_POISON);
            }
            throw err;
        }
    }

    /** Sends UNSUBSCRIBE; rejects `MQTT_UNSUBSCRIBE_FAILED` when the broker refuses. */
    public async unsubscribe(topic: string): Promise<void> {
        const packet = await this.race(this.client.unsubscribeAsync(topic));
        const code = reasonCodeOf({ packet });
        if (code !== undefined) {
            throw brokerRefusal(MqttErrorCode.UnsubscribeFailed, `MQTT broker rejected the unsubscription from ${topic}`, topic, code,
                reasonStringOf(null, packet));
        }
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

    private onConnect(connack: IConnackPacket): void {
        // MQTT.js emits 'connect' once it has resent what it kept: by then the connection may be
        // gone again (a broker that closes on a resent packet). The next CONNACK brings another.
        if (!this.client.connected) return;
        const attempts = this._attempts;
        this._attempts = 0;
        this._connected = true;
        if (!this._lastErrorIsPoison) this._lastError = null;
        this._reconnects++;
        this._reporting.counters.incrementOne('mqtt.reconnects');
        this._reporting.logger.info(NO_CID, 'Reconnected to MQTT broker at %s after %d ms offline (attempt %d)%s',
            this.displayUri, Date.now() - this._lostAt, attempts,
            this._settings.cleanSession ? '' : connack.sessionPresent ? '; the broker kept the session' : '; the broker had no session');
        const waiting = this._nextConnect;
        this._nextConnect = null;
        waiting?.resolve();
        this._events.resumed(connack.sessionPresent);
    }

    private onClose(): void {
        if (!this._connected) return;
        this._connected = false;
        this.notifyLoss();
        this._lostAt = Date.now();
        // connections.N are tried in the order given after every loss: the first is the one the user prefers.
        restartServerRotation(this.client);
        this._reporting.counters.incrementOne('mqtt.connection_losses');
        const sessionKept = this._settings.sessionOutlivesConnection;
        if (this._settings.retryConnect) {
            this._reporting.logger.warn(NO_CID, 'Connection to MQTT broker at %s lost; reconnecting in %d ms, then with backoff up to %d ms',
                this.displayUri, this._reconnector.nextDelay, this._settings.maxReconnectTimeout);
            this._events.lost(sessionKept);
            return;
        }
        this._reporting.logger.warn(NO_CID, 'Connection to MQTT broker at %s lost; not reconnecting because options.retry_connect is false',
            this.displayUri);
        // Nothing pending will complete: QoS 1 and 2 messages in flight would wait forever.
        this.failWaiting(new ConnectionException(NO_CID, MqttErrorCode.NotConnected,
            `MQTT connection to ${this.displayUri} was lost and options.retry_connect is false`));
        this._events.lost(sessionKept);
    }

    /**
     * Ends the link: pending operations reject with `MQTT_CLOSED` first, then the client is ended
     * (DISCONNECT when connected and idle) and the link's handlers are removed.
     */
    public async end(correlationId: string | null): Promise<void> {
        this._ended = closedError(cid(correlationId));
        this.failWaiting(this._ended);
        this._connected = false;
        this.notifyLoss();
        this._reconnector.stop();
        await endClient(this.client, true);
        for (const { event, handler } of this._handlers) {
            (this.client as unknown as { off(e: string, h: (...args: never[]) => void): void }).off(event, handler);
        }
        this._handlers.length = 0;
    }
}

/**
 * MQTT 5: a broker may impose a keepalive (server keepalive). MQTT.js honours it only while its
 * own keepalive is on; with keepalive_timeout 0 it would never ping, and the broker would drop the
 * connection. Seen before MQTT.js handles the CONNACK, so its keepalive timer uses it. Each
 * CONNACK decides anew: a failover broker without a server keepalive gets ours again. (Only
 * then: a listener on every packet costs every message a call.)
 */
function followServerKeepAlive(client: MqttClient): void {
    const ownKeepAlive = client.options.keepalive;
    if (ownKeepAlive !== 0) return;
    client.on('packetreceive', (packet: Packet) => {
        if (packet.cmd !== 'connack') return;
        const serverKeepAlive = packet.properties?.serverKeepAlive;
        client.options.keepalive = serverKeepAlive !== undefined && serverKeepAlive > 0 ? serverKeepAlive : ownKeepAlive;
    });
    // The next CONNECT must announce our own keepalive again (not the last server's).
    client.on('close', () => { client.options.keepalive = ownKeepAlive; });
}
