import type { MqttClient } from 'mqtt';

import { cid, type MqttReporting } from '../shared/pip';
import type { IMqttMessageListener } from '../connect/IMqttMessageListener';
import type { MqttConnection } from '../connect/MqttConnection';

/**
 * A queue's one subscription: made once per open connection (a connection closed and reopened
 * by its owner has a new client, and needs it again), shared by concurrent callers, forgotten
 * when it fails so that the next caller tries again, and dropped at close(). Internal to the package.
 */
export class MqttQueueSubscription {
    /** The subscription in flight or made, and the client it was made on. */
    private _subscribing: Promise<void> | null = null;
    private _subscribedOn: MqttClient | null = null;

    /**
     * @param _listener  the queue's listener, the same for every subscribe and unsubscribe.
     * @param _name      the queue's name now, for logs.
     * @param _reporting the queue's logger and counters.
     */
    public constructor(
        private readonly _listener: IMqttMessageListener,
        private readonly _name: () => string,
        private readonly _reporting: MqttReporting,
    ) {}

    /** Subscribes `filter` on the connection unless it is subscribed (or subscribing) on its current client already. */
    public once(correlationId: string | null, connection: MqttConnection, filter: string, qos: 0 | 1 | 2): Promise<void> {
        const client = connection.getConnection();
        if (this._subscribing && this._subscribedOn === client) return this._subscribing;
        const subscribing = connection.subscribe(filter, { qos }, this._listener);
        this._subscribing = subscribing;
        this._subscribedOn = client;
        void subscribing.then(
            () => this._reporting.logger.debug(cid(correlationId), 'MQTT queue %s subscribed to %s', this._name(), filter),
            () => {
                if (this._subscribing !== subscribing) return;
                this._subscribing = null;
                this._subscribedOn = null;
            },
        );
        return subscribing;
    }

    /** Like once(), without waiting; a failure is logged. */
    public start(correlationId: string | null, connection: MqttConnection, filter: string, qos: 0 | 1 | 2): void {
        this.once(correlationId, connection, filter, qos).catch((err: unknown) => {
            this._reporting.logger.error(cid(correlationId), err as Error, 'MQTT queue %s cannot subscribe to %s', this._name(), filter);
        });
    }

    /**
     * Forgets the subscription and, unless `keep` (the broker is to keep it in a persistent
     * session), unsubscribes from `filter` at once (removing the listener also settles a subscribe()
     * still waiting for it). Resolves once the unsubscribe is answered (a refusal is logged) and the
     * forgotten subscribe() has settled; never rejects.
     */
    public async end(correlationId: string | null, connection: MqttConnection | null, filter: string | undefined, keep: boolean): Promise<void> {
        const subscribed = this._subscribing;
        this._subscribing = null;
        this._subscribedOn = null;
        if (connection && subscribed && filter !== undefined && !keep) {
            try {
                await connection.unsubscribe(filter, this._listener);
            } catch (err) {
                this._reporting.logger.warn(cid(correlationId), 'MQTT queue %s could not unsubscribe from %s: %s',
                    this._name(), filter, (err as Error).message);
            }
        }
        await subscribed?.catch(() => undefined);
    }
}
