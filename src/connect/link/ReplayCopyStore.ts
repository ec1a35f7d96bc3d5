import { Store, type Packet } from 'mqtt';

/**
 * MQTT.js's outgoing store, handing out copies when it replays.
 *
 * After a reconnect MQTT.js sends its stored QoS 1/2 publishes again, and with topic aliases on
 * it writes that connection's alias into the packet it sends (topic '' and the alias). That packet
 * is the stored one, so after one more drop the next connection would get an empty topic with an
 * alias it never saw: a protocol error, and the same again after every reconnect. Copies keep the
 * stored packets as MQTT.js stored them (full topic, no alias).
 */
export class ReplayCopyStore extends Store {
    public override createStream(): ReturnType<Store['createStream']> {
        const stream = super.createStream();
        const push = stream.push.bind(stream);
        stream.push = (chunk: unknown): boolean => {
            if (chunk === null) return push(null);
            const packet = chunk as Packet & { properties?: object };
            return push({ ...packet, ...(packet.properties ? { properties: { ...packet.properties } } : {}) });
        };
        return stream;
    }
}
