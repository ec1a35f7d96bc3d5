import type { IClientSubscribeOptions } from 'mqtt';

import type { IMqttMessageListener } from '../IMqttMessageListener';
import type { MqttSubscription } from '../MqttSubscription';
import type { MqttRoute } from './MqttTopicRouter';
import type { ParsedFilter } from '../MqttTopics';

/** One listener on one filter. */
export interface MqttRegistration {
    readonly subscription: MqttSubscription;
    readonly route: MqttRoute<IMqttMessageListener>;
    /** True once a SUBACK covered this listener's QoS. */
    confirmed: boolean;
}

/** A subscribe() call waiting for the broker to cover its listener. */
interface Waiter {
    readonly promise: Promise<void>;
    resolve(): void;
    reject(err: Error): void;
}

/**
 * The listeners of one broker filter, and what the broker holds for it. The broker holds one
 * subscription per filter, at the highest QoS any of its listeners asked for.
 *
 * Its state changes only through the methods named after what happened (granted, refused,
 * lost, resumed, ...), called by [[MqttSubscriptions]] and [[MqttFilterSync]].
 */
export class MqttFilterEntry {
    public readonly registrations = new Map<IMqttMessageListener, MqttRegistration>();
    private _brokerQos: 0 | 1 | 2 | null = null;
    private _ceiling: 0 | 1 | null = null;
    private _brokerOptionsKey: string | null = null;
    private _verify = false;
    private _syncing: Promise<void> | null = null;
    private _dirty = false;
    /** SUBSCRIBEs of confirmed listeners refused in a row (a resubscription the broker refuses after a reconnect). */
    private _refusals = 0;
    /** Ends the wait before the next of those SUBSCRIBEs (see pause()). */
    private _wake: (() => void) | null = null;
    private _unsubscribeError: Error | null = null;
    /** Made when first needed and dropped when empty: most entries have no waiter most of the time (bench scenario 3: memory per subscription). */
    private _waiters: Map<MqttRegistration, Waiter> | null = null;

    public constructor(public readonly parsed: ParsedFilter) {}

    /** The QoS of the broker's subscription to this filter, or null when it holds none. */
    public get brokerQos(): 0 | 1 | 2 | null {
        return this._brokerQos;
    }

    /**
     * Set when the broker granted the filter less than its confirmed listeners had (a
     * resubscription after a reconnect): the QoS it grants. Listeners that come later asking for
     * more are refused, and the filter is not sent again for the same answer until the next reconnect.
     */
    public get ceiling(): 0 | 1 | null {
        return this._ceiling;
    }

    /**
     * True after a reconnect to a broker that says it kept the session: it may still have lost the
     * subscription (a crash between two saves), so it is sent again while listeners want it.
     */
    public get verify(): boolean {
        return this._verify;
    }

    /** The reconciliation with the broker in progress, if any (see MqttFilterSync). */
    public get syncing(): Promise<void> | null {
        return this._syncing;
    }

    /** True when listeners changed since the reconciliation last looked. */
    public get dirty(): boolean {
        return this._dirty;
    }

    /** The failure of the last UNSUBSCRIBE, for the unsubscribe() call that waits on it. */
    public get unsubscribeError(): Error | null {
        return this._unsubscribeError;
    }

    /** True when the broker's subscription is what the listeners want now (QoS within the ceiling, MQTT 5 options). */
    public isSatisfied(): boolean {
        const want = this.wantedQos();
        if (want === null) return this._brokerQos === null;
        return this._brokerQos !== null && Math.min(want, this._ceiling ?? 2) <= this._brokerQos && !this._verify
            && this._brokerOptionsKey === this.wantedOptionsKey();
    }

    /** The MQTT 5 options the listeners want, or null without listeners. */
    public wantedOptionsKey(): string | null {
        const first = this.registrations.values().next().value;
        return first ? mqtt5Options(first.subscription.options) : null;
    }

    /** The highest QoS asked for by the listeners, or null without listeners. */
    public wantedQos(): 0 | 1 | 2 | null {
        let qos: 0 | 1 | 2 | null = null;
        for (const r of this.registrations.values()) if (qos === null || r.subscription.qos > qos) qos = r.subscription.qos;
        return qos;
    }

    /** The options to send to the broker: the first listener's, at the given QoS. */
    public brokerOptions(qos: 0 | 1 | 2): IClientSubscribeOptions {
        const first = this.registrations.values().next().value;
        return { ...(first ? first.subscription.options : {}), qos };
    }

    /** Listeners came or went: the reconciliation must look again (now, if it waits in pause()). */
    public changed(): void {
        this._dirty = true;
        this._wake?.();
    }

    /** Refused SUBSCRIBEs of confirmed listeners in a row; 0 again once granted. */
    public get refusals(): number {
        return this._refusals;
    }

    /** The broker refused a SUBSCRIBE sent for confirmed listeners only: they stay, and it is asked again after pause(). */
    public refusedAgain(): void {
        this._refusals++;
    }

    /**
     * Waits `ms` before the reconciliation asks again; ends early when listeners come or go
     * (changed()) or `cancel` is called. Resolves in every case.
     */
    public pause(ms: number, cancel: (wake: () => void) => () => void): Promise<void> {
        return new Promise<void>((resolve) => {
            const done = (): void => {
                clearTimeout(timer);
                stopCancel();
                this._wake = null;
                resolve();
            };
            const timer = setTimeout(done, ms);
            const stopCancel = cancel(done);
            this._wake = done;
        });
    }

    /** The reconciliation takes note of the listeners as they are now. */
    public looked(): void {
        this._dirty = false;
    }

    /** A reconciliation started (or, with null, ended). */
    public syncingWith(run: Promise<void> | null): void {
        this._syncing = run;
    }

    /** The broker granted `qos` with the options of `optionsKey`, as asked. */
    public granted(qos: 0 | 1 | 2, optionsKey: string | null): void {
        this._verify = false;
        this._refusals = 0;
        this._brokerOptionsKey = optionsKey;
        this._brokerQos = qos;
        this._ceiling = null;
    }

    /**
     * The broker granted less than asked. `asCeiling`: no waiting listener was refused for it (a
     * resubscription after a reconnect), so the grant is the most the filter gets until the next reconnect.
     */
    public downgraded(granted: 0 | 1, optionsKey: string | null, asCeiling: boolean): void {
        this._verify = false;
        this._brokerOptionsKey = optionsKey;
        this._brokerQos = granted;
        if (asCeiling) this._ceiling = granted;
    }

    /** The broker refused a SUBSCRIBE; a refused verification means it may hold nothing for this filter. */
    public refused(verifying: boolean): void {
        this._verify = false;
        if (verifying) this._brokerQos = null;
    }

    /** An UNSUBSCRIBE is about to be sent. */
    public unsubscribing(): void {
        this._unsubscribeError = null;
    }

    /** The UNSUBSCRIBE was answered, or refused with `error`: either way the broker's subscription is of no more use. */
    public unsubscribed(error: Error | null): void {
        if (error) this._unsubscribeError = error;
        this._brokerQos = null;
    }

    /** The reconciliation failed for good while it wanted no subscription: the unsubscribe() call gets `error`. */
    public unsubscribeFailed(error: Error): void {
        this._unsubscribeError = error;
    }

    /** The broker forgot the subscription: a clean session lost with the connection, or a reconnect without a session. */
    public lost(): void {
        this._brokerQos = null;
    }

    /** A reconnect to a broker that says it kept the session: check the subscription is still there. */
    public resumed(): void {
        this._verify = true;
    }

    /** A promise that settles when the broker covers (or refuses) this registration. */
    public waitFor(registration: MqttRegistration): Promise<void> {
        const waiters = this._waiters ??= new Map<MqttRegistration, Waiter>();
        const existing = waiters.get(registration);
        if (existing) return existing.promise;
        let resolve!: () => void;
        let reject!: (err: Error) => void;
        const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
        waiters.set(registration, { promise, resolve, reject });
        return promise;
    }

    /** True while some subscribe() call waits on this registration. */
    public isWaiting(registration: MqttRegistration): boolean {
        return this._waiters?.has(registration) ?? false;
    }

    /** Resolves the waiters the broker's subscription now covers, and marks them confirmed. */
    public settleCovered(): void {
        const waiters = this._waiters;
        if (!waiters) return;
        for (const [registration, waiter] of waiters) {
            const covered = this._brokerQos !== null && registration.subscription.qos <= this._brokerQos;
            const gone = this.registrations.get(registration.subscription.listener) !== registration;
            if (covered || gone) {
                if (covered) registration.confirmed = true;
                waiters.delete(registration);
                waiter.resolve();
            }
        }
        if (waiters.size === 0 && this._waiters === waiters) this._waiters = null;
    }

    /** Rejects the waiter of a registration, if any. */
    public rejectWaiter(registration: MqttRegistration, err: Error): void {
        const waiters = this._waiters;
        const waiter = waiters?.get(registration);
        if (!waiters || !waiter) return;
        waiters.delete(registration);
        if (waiters.size === 0) this._waiters = null;
        waiter.reject(err);
    }

    /** Rejects every waiter. */
    public rejectAllWaiters(err: Error): void {
        if (!this._waiters) return;
        for (const registration of [...this._waiters.keys()]) this.rejectWaiter(registration, err);
    }
}

const DEFAULT_MQTT5_OPTIONS = JSON.stringify([false, false, 0, []]);

/** The MQTT 5 subscribe options of a subscription, with their defaults, as one comparable string. */
export function mqtt5Options(options: IClientSubscribeOptions): string {
    // The usual case (no MQTT 5 options) as one shared string, not a new one per filter.
    if (options.nl === undefined && options.rap === undefined && options.rh === undefined
        && (options.properties === undefined || Object.keys(options.properties).length === 0)) {
        return DEFAULT_MQTT5_OPTIONS;
    }
    const properties = options.properties ?? {};
    const sorted = Object.keys(properties).sort().map((k) => [k, (properties as Record<string, unknown>)[k]]);
    return JSON.stringify([options.nl ?? false, options.rap ?? false, options.rh ?? 0, sorted]);
}
