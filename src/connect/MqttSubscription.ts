import type { IClientSubscribeOptions } from 'mqtt';

import type { IMqttMessageListener } from './IMqttMessageListener';
import { hasWildcards } from './MqttTopics';

/**
 * One listener's subscription on an [[MqttConnection]]: the filter as sent to the broker,
 * the filter incoming topics are matched against, the options asked for, and the listener.
 *
 * Instances are created by the connection and are read-only snapshots.
 */
export class MqttSubscription {
    /**
     * @param topic     the topic filter as subscribed, e.g. `$share/workers/jobs/+`.
     * @param filter    the filter topics are matched against (without `$share/<group>/`).
     * @param options   the subscribe options this listener asked for (QoS and MQTT 5 flags).
     * @param listener  the listener that receives the messages.
     */
    public constructor(
        public readonly topic: string,
        public readonly filter: string,
        public readonly options: Readonly<IClientSubscribeOptions>,
        public readonly listener: IMqttMessageListener,
    ) {}

    /** The QoS this listener asked for. */
    public get qos(): 0 | 1 | 2 {
        return this.options.qos;
    }

    /** True when the filter has the wildcards `+` or `#`. */
    public get hasWildcards(): boolean {
        return hasWildcards(this.filter);
    }

    /** True for a shared subscription (`$share/<group>/<filter>`). */
    public get isShared(): boolean {
        return this.topic !== this.filter;
    }
}
