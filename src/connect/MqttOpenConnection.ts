import { cid, type MqttReporting } from '../shared/pip';
import type { MqttConnectionSettings } from './config/MqttConnectionSettings';
import { MqttLink } from './link/MqttLink';
import type { MqttConnectionStatus } from './MqttConnectionStatus';
import { MqttPublisher } from './publish/MqttPublisher';
import { MqttDispatcher } from './subscriptions/MqttDispatcher';
import type { MqttSubscriptions } from './subscriptions/MqttSubscriptions';

/** The part of [[MqttConnectionStatus]] that only an open connection knows. */
export type MqttOpenStatus = Pick<MqttConnectionStatus,
    'connected' | 'reconnectAttempts' | 'nextAttemptDelay' | 'reconnects' | 'lastError' | 'pendingPublishes' | 'keepAlive' | 'maxQos'>;

/** The status of a connection that is not open. */
export const CLOSED_STATUS: MqttOpenStatus = Object.freeze({
    connected: false, reconnectAttempts: 0, nextAttemptDelay: null, reconnects: 0, lastError: null, pendingPublishes: 0,
    keepAlive: null, maxQos: null,
});

/**
 * What an [[MqttConnection]] is made of from a successful open() to close(), wired one way: the
 * settings it opened with, the link (the MQTT.js client), the publish pipeline on the link, and
 * the dispatcher that takes the link's messages to the subscriptions' listeners. The link's
 * events go to the subscriptions (lost, resumed), the publisher (closed, failed) and the
 * connection's state (`changed`).
 */
export class MqttOpenConnection {
    private constructor(
        public readonly settings: MqttConnectionSettings,
        public readonly link: MqttLink,
        public readonly publisher: MqttPublisher,
        private readonly _dispatcher: MqttDispatcher,
        private readonly _subscriptions: MqttSubscriptions,
    ) {}

    /** The client id in use: configured, generated, or assigned by an MQTT 5 broker. */
    public get clientId(): string {
        return this.link.client.options.clientId ?? this.settings.clientId;
    }

    /**
     * Starts the link (see MqttLink.start), wires the parts to it, and logs the outcome.
     * @param owner.changed called when the link goes down (false) or comes back (true).
     * @param owner.generatedClientId the connection's own client id, to warn when a persistent session uses it.
     */
    public static async start(
        correlationId: string | null, settings: MqttConnectionSettings, subscriptions: MqttSubscriptions, reporting: MqttReporting,
        owner: { changed(connected: boolean): void; generatedClientId: string }, signal: AbortSignal,
    ): Promise<MqttOpenConnection> {
        const displayUri = settings.connection.displayUri;
        let open: MqttOpenConnection;
        try {
            open = await MqttOpenConnection.wire(correlationId, settings, subscriptions, reporting, (connected) => owner.changed(connected), signal);
        } catch (err) {
            reporting.logger.error(cid(correlationId), err as Error, 'Failed to connect to MQTT broker at %s', displayUri);
            throw err;
        }
        reporting.logger.info(cid(correlationId), 'Connected to MQTT broker at %s as %s', displayUri, open.clientId);
        if (!settings.cleanSession && settings.clientId === owner.generatedClientId) {
            reporting.logger.warn(cid(correlationId), 'options.clean_session is false but no client_id is configured: ' +
                'the broker keeps the session across reconnects, but a new process gets a new client id and a new session');
        }
        return open;
    }

    private static async wire(
        correlationId: string | null, settings: MqttConnectionSettings, subscriptions: MqttSubscriptions, reporting: MqttReporting,
        changed: (connected: boolean) => void, signal: AbortSignal,
    ): Promise<MqttOpenConnection> {
        const dispatcher = new MqttDispatcher(subscriptions, reporting, settings.connection.displayUri, !settings.cleanSession,
            settings.maxOfflineMessages);
        let publisher: MqttPublisher | null = null;
        const link = await MqttLink.start(correlationId, settings, reporting, {
            message: (topic, payload, packet) => dispatcher.dispatch(topic, payload, packet),
            closed: () => publisher?.closed(),
            failed: (err) => publisher?.failAll(err),
            poisoned: (messageId, error) => publisher?.poisoned(messageId, error),
            lost: (sessionKept) => {
                subscriptions.lost(sessionKept);
                changed(false);
            },
            resumed: (sessionPresent) => {
                // What was published while the link was down goes first, as MQTT.js's own resend did.
                publisher?.release();
                subscriptions.resumed(sessionPresent);
                changed(true);
            },
        }, signal);
        publisher = new MqttPublisher(link, settings, reporting);
        subscriptions.attach(link, dispatcher);
        return new MqttOpenConnection(settings, link, publisher, dispatcher, subscriptions);
    }

    /** What getStatus() tells of the link and the publisher. */
    public status(): MqttOpenStatus {
        const link = this.link;
        return {
            connected: link.connected,
            reconnectAttempts: link.attempts,
            nextAttemptDelay: link.nextAttemptDelay,
            reconnects: link.reconnects,
            lastError: link.lastError,
            pendingPublishes: this.publisher.pendingPublishes,
            keepAlive: link.client.keepalive,
            maxQos: this.publisher.support.max,
        };
    }

    /** Stops acknowledging, drops the subscriptions and the held messages, then ends the link (see MqttLink.end). */
    public async end(correlationId: string | null): Promise<void> {
        // Before the listeners go: a message that comes now is not delivered, so it is not acknowledged either.
        this.link.acknowledgements.closing();
        this._subscriptions.detach();
        this._dispatcher.dropHeld();
        await this.link.end(correlationId);
    }
}
