import type { MqttClient } from 'mqtt';

import type { IMqttMessageListener } from '../connect/IMqttMessageListener';
import type { MqttConnection } from '../connect/MqttConnection';

/**
 * A queue's one subscription: made once per open connection (a connection closed and reopened
 * by its owner has a new client, and needs it again), shared by concurrent callers, and forgotten
 * when it fails so that the next caller tries again. Internal to the package.
 */
export class MqttQueueSubscription {
    /** The subscription in flight or made, and the client it was made on. */
    private _subscribing: Promise<void> | null = null;
    private _subscribedOn: MqttClient | null = null;

    /** @param listener the queue's listener, the same for every subscribe and unsubscribe. */
    public constructor(public readonly listener: IMqttMessageListener) {}

    /**
     * Subscribes `filter` on the connection unless it is subscribed (or subscribing) on its current
     * client already; `onSubscribed` is called once a new subscription is made.
     */
    public once(connection: MqttConnection, filter: string, qos: 0 | 1 | 2, onSubscribed: () => void): Promise<void> {
        const client = connection.getConnection();
        if (this._subscribing && this._subscribedOn === client) return this._subscribing;
        const subscribing = connection.subscribe(filter, { qos }, this.listener);
        this._subscribing = subscribing;
        this._subscribedOn = client;
        void subscribing.then(onSubscribed, () => {
            if (this._subscribing !== subscribing) return;
            this._subscribing = null;
            this._subscribedOn = null;
        });
        return subscribing;
    }

    /** Forgets the subscription (close()); returns the one in flight or made, or null. */
    public forget(): Promise<void> | null {
        const subscribed = this._subscribing;
        this._subscribing = null;
        this._subscribedOn = null;
        return subscribed;
    }
}
