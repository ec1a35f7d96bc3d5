// A publisher and a subscriber on one topic, for the scenarios that compare raw MQTT.js with
// this package: the same two clients in both, so only the library differs.
import mqtt from 'mqtt';
import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection } from '../src';

/** A publisher bound to a topic and QoS, with its subscriber already subscribed. */
export interface PubSubPair {
    publish(payload: Buffer | string): Promise<void>;
    close(): Promise<void>;
}

/**
 * Raw MQTT.js: two clients, `publishAsync` and the `message` event. With `acknowledgeAfter`, the
 * subscriber acknowledges each QoS 1 message only once `onPayload` has handled it, by hand: in
 * `handleMessage`, which MQTT.js calls before it sends the PUBACK (`customHandleAcks` is MQTT 5 only).
 */
export async function openRawPair(
    url: string, topic: string, qos: 0 | 1, onPayload: (payload: Buffer) => void, acknowledgeAfter = false,
): Promise<PubSubPair> {
    const sub = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
    const pub = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
    if (acknowledgeAfter) {
        sub.handleMessage = (packet, callback) => {
            onPayload(packet.payload as Buffer);
            callback();
        };
    } else {
        sub.on('message', (_topic, payload) => onPayload(payload));
    }
    await sub.subscribeAsync(topic, { qos });
    return {
        publish: async (payload) => { await pub.publishAsync(topic, payload, { qos }); },
        close: async () => { await Promise.all([pub.endAsync(), sub.endAsync()]); },
    };
}

/** This package: two MqttConnections, `publish()` and a listener. */
export async function openOursPair(url: string, topic: string, qos: 0 | 1, onPayload: (payload: Buffer) => void): Promise<PubSubPair> {
    const config = ConfigParams.fromTuples('connection.uri', url);
    const sub = new MqttConnection();
    const pub = new MqttConnection();
    sub.configure(config);
    pub.configure(config);
    await Promise.all([sub.open(null), pub.open(null)]);
    await sub.subscribe(topic, { qos }, { onMessage: (_topic, payload) => onPayload(payload) });
    return {
        publish: (payload) => pub.publish(topic, payload, { qos }),
        close: async () => { await Promise.all([pub.close(null), sub.close(null)]); },
    };
}
