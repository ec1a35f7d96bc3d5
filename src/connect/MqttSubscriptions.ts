import type { IClientSubscribeOptions } from 'mqtt';

import type { IMqttMessageListener } from './IMqttMessageListener';
import { MqttSubscription } from './MqttSubscription';
import { type MqttRoute, MqttTopicRouter } from './MqttTopicRouter';
import type { ParsedFilter } from './MqttTopics';

/** A listener on a filter, with its route in the router. */
interface Registration {
    readonly subscription: MqttSubscription;
    readonly route: MqttRoute<IMqttMessageListener>;
}

/**
 * The listeners of one broker filter. The broker holds one subscription per filter, at the
 * highest QoS any of its listeners asked for.
 */
export class MqttFilterEntry {
    public readonly registrations = new Map<IMqttMessageListener, Registration>();
    /** The QoS last asked of the broker for this filter. */
    public brokerQos: 0 | 1 | 2 = 0;
    /** The SUBSCRIBE in flight for this filter, if any. */
    public pending: Promise<void> | null = null;
    /** Counts SUBSCRIBEs sent for this filter, so that only the latest one decides `brokerQos`. */
    public sequence = 0;

    public constructor(public readonly parsed: ParsedFilter) {}

    /** The options to send to the broker: the first listener's, at the highest QoS asked. */
    public brokerOptions(): IClientSubscribeOptions {
        const first = this.registrations.values().next().value;
        const base: IClientSubscribeOptions = first ? { ...first.subscription.options } : { qos: 0 };
        return { ...base, qos: this.maxQos() };
    }

    /** The highest QoS asked for by the listeners. */
    public maxQos(): 0 | 1 | 2 {
        let qos: 0 | 1 | 2 = 0;
        for (const r of this.registrations.values()) if (r.subscription.qos > qos) qos = r.subscription.qos;
        return qos;
    }
}

/**
 * The subscriptions of one connection: filter entries by broker filter, and the router that
 * finds the listeners of an incoming topic. No I/O: the connection talks to the broker.
 */
export class MqttSubscriptions {
    private readonly _entries = new Map<string, MqttFilterEntry>();
    private readonly _router = new MqttTopicRouter<IMqttMessageListener>();

    /** The entry of a broker filter, if any. */
    public get(topic: string): MqttFilterEntry | undefined {
        return this._entries.get(topic);
    }

    /** All filter entries. */
    public entries(): IterableIterator<MqttFilterEntry> {
        return this._entries.values();
    }

    /** The number of broker filters. */
    public get filterCount(): number {
        return this._entries.size;
    }

    /** All listener subscriptions. */
    public list(): MqttSubscription[] {
        const result: MqttSubscription[] = [];
        for (const entry of this._entries.values()) {
            for (const r of entry.registrations.values()) result.push(r.subscription);
        }
        return result;
    }

    /**
     * Adds a listener to a filter.
     * @returns the entry and whether the listener was added (false when it was already there).
     */
    public add(parsed: ParsedFilter, options: IClientSubscribeOptions, listener: IMqttMessageListener): { entry: MqttFilterEntry; added: boolean } {
        let entry = this._entries.get(parsed.brokerFilter);
        if (!entry) {
            entry = new MqttFilterEntry(parsed);
            this._entries.set(parsed.brokerFilter, entry);
        }
        if (entry.registrations.has(listener)) return { entry, added: false };
        const subscription = new MqttSubscription(parsed.brokerFilter, parsed.matchFilter, Object.freeze({ ...options }), listener);
        const route = this._router.add(parsed.matchFilter, listener);
        entry.registrations.set(listener, { subscription, route });
        return { entry, added: true };
    }

    /**
     * Removes a listener from a filter; removes the entry when it was the last listener.
     * @returns true when the entry is now gone (the broker subscription should be dropped).
     */
    public remove(topic: string, listener: IMqttMessageListener): boolean {
        const entry = this._entries.get(topic);
        if (!entry) return false;
        const registration = entry.registrations.get(listener);
        if (!registration) return false;
        this._router.remove(registration.route);
        entry.registrations.delete(listener);
        if (entry.registrations.size > 0) return false;
        this._entries.delete(topic);
        return true;
    }

    /** Removes everything. */
    public clear(): void {
        for (const entry of this._entries.values()) {
            for (const r of entry.registrations.values()) this._router.remove(r.route);
        }
        this._entries.clear();
    }

    /** The distinct listeners whose filters match an incoming topic name. */
    public match(topic: string): IMqttMessageListener[] {
        return this._router.match(topic);
    }
}
