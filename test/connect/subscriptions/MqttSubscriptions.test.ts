import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { IClientSubscribeOptions } from 'mqtt';
import { ApplicationException, BadRequestException, ConnectionException, InvalidStateException } from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';

import { MqttErrorCode } from '../../../src/connect/errors/MqttErrorCode';
import type { IMqttMessageListener } from '../../../src/connect/IMqttMessageListener';
import { type MqttBacklog, type MqttSubscriptionLink, MqttSubscriptions } from '../../../src/connect/subscriptions/MqttSubscriptions';
import { type ParsedFilter, parseFilter } from '../../../src/connect/MqttTopics';
import { CapturingLogger } from '../../helpers/components';

// MqttSubscriptions (with its MqttFilterSync and MqttFilterEntry) against a fake link: every
// SUBSCRIBE and UNSUBSCRIBE is recorded and stays unanswered until the test answers it.

interface Deferred<T> {
    readonly promise: Promise<T>;
    resolve(value: T): void;
    reject(err: Error): void;
}

function deferred<T>(): Deferred<T> {
    let resolve!: (value: T) => void;
    let reject!: (err: Error) => void;
    const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
}

type Suback = { code: number; reasonString?: string };

/** One SUBSCRIBE or UNSUBSCRIBE the link was asked to send, waiting for the test's answer. */
type Sent =
    | { kind: 'subscribe'; topic: string; options: IClientSubscribeOptions; resubscribe: boolean; answer: Deferred<Suback> }
    | { kind: 'unsubscribe'; topic: string; answer: Deferred<void> };

/** A link whose broker is the test: it records what it is asked to send and answers when told to. */
class FakeLink implements MqttSubscriptionLink {
    public readonly sent: Sent[] = [];
    public readonly logger = new CapturingLogger();
    public connected = true;
    public ended = false;
    public persistent = false;
    /** What checkUsable() throws, if anything (down for good). */
    public unusable: Error | null = null;
    private readonly _lostErrors = new Set<unknown>();
    private _reconnect: Deferred<void> | null = null;
    private _lossCallbacks = new Set<() => void>();

    public isConnected(): boolean {
        return this.connected;
    }

    public whenConnected(): Promise<void> {
        if (this.connected) return Promise.resolve();
        this._reconnect ??= deferred<void>();
        return this._reconnect.promise;
    }

    public subscribe(topic: string, options: IClientSubscribeOptions, resubscribe: boolean): Promise<Suback> {
        const answer = deferred<Suback>();
        this.sent.push({ kind: 'subscribe', topic, options, resubscribe, answer });
        return answer.promise;
    }

    public unsubscribe(topic: string): Promise<void> {
        const answer = deferred<void>();
        this.sent.push({ kind: 'unsubscribe', topic, answer });
        return answer.promise;
    }

    public isLost(err: unknown): boolean {
        return this._lostErrors.has(err);
    }

    public checkUsable(): void {
        if (this.unusable) throw this.unusable;
    }

    /** The wait before a refused resubscription is asked again, in ms; and the attempts it was asked for. */
    public retryWait = 5;
    public readonly retryAttempts: number[] = [];

    public retryDelay(attempt: number): number {
        this.retryAttempts.push(attempt);
        return this.retryWait;
    }

    public onNextLoss(callback: () => void): () => void {
        this._lossCallbacks.add(callback);
        return () => this._lossCallbacks.delete(callback);
    }

    /** A plain Error that isLost() recognises: the connection dropped under the operation. */
    public lostError(): Error {
        const err = new Error('connection lost');
        this._lostErrors.add(err);
        return err;
    }

    /** The connection drops (the loss callbacks run). */
    public drop(): void {
        this.connected = false;
        const callbacks = [...this._lossCallbacks];
        this._lossCallbacks.clear();
        for (const callback of callbacks) callback();
    }

    /** The connection is back: whenConnected() resolves. */
    public reconnect(): void {
        this.connected = true;
        const waiting = this._reconnect;
        this._reconnect = null;
        waiting?.resolve();
    }

    /** The SUBSCRIBEs and UNSUBSCRIBEs sent so far, as `SUBSCRIBE a/b 1` and `UNSUBSCRIBE a/b`. */
    public log(): string[] {
        return this.sent.map((s) => s.kind === 'subscribe' ? `SUBSCRIBE ${s.topic} ${s.options.qos}${s.resubscribe ? ' resubscribe' : ''}` : `UNSUBSCRIBE ${s.topic}`);
    }

    /** The last request sent, which must be a SUBSCRIBE. */
    public lastSubscribe(): Extract<Sent, { kind: 'subscribe' }> {
        const last = this.sent[this.sent.length - 1];
        assert.ok(last?.kind === 'subscribe', `the last request is a SUBSCRIBE (sent: ${this.log().join(', ')})`);
        return last;
    }

    /** The last request sent, which must be an UNSUBSCRIBE. */
    public lastUnsubscribe(): Extract<Sent, { kind: 'unsubscribe' }> {
        const last = this.sent[this.sent.length - 1];
        assert.ok(last?.kind === 'unsubscribe', `the last request is an UNSUBSCRIBE (sent: ${this.log().join(', ')})`);
        return last;
    }
}

/** A backlog that records what it is told. */
class FakeBacklog implements MqttBacklog {
    public readonly calls: string[] = [];
    public readonly listeners: IMqttMessageListener[] = [];

    public releaseHeld(matchFilter: string, listener: IMqttMessageListener): void {
        this.calls.push(`releaseHeld ${matchFilter}`);
        this.listeners.push(listener);
    }

    public released(matchFilter: string): void {
        this.calls.push(`released ${matchFilter}`);
    }
}

/** A listener that is only an identity here (no messages are dispatched in these tests). */
function listener(): IMqttMessageListener {
    return { onMessage: () => undefined };
}

function filter(text: string): ParsedFilter {
    const parsed = parseFilter(text);
    assert.ok(typeof parsed !== 'string', parsed as string);
    return parsed;
}

/** Waits (up to 2 s) until `done` holds, settling in between. */
async function waitUntil(done: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 2000;
    while (!done()) {
        if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
    }
}

/** Lets every pending promise callback and the reconciliations they start run. */
async function settle(): Promise<void> {
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A promise whose outcome can be read synchronously (and whose rejection is always handled). */
interface Tracked {
    state: 'pending' | 'fulfilled' | 'rejected';
    error: unknown;
    readonly promise: Promise<void>;
}

function track(promise: Promise<void>): Tracked {
    const tracked: Tracked = { state: 'pending', error: undefined, promise };
    promise.then(() => { tracked.state = 'fulfilled'; }, (err: unknown) => { tracked.state = 'rejected'; tracked.error = err; });
    return tracked;
}

/** The Pip.Services exception a tracked promise rejected with. */
function rejectionOf(tracked: Tracked): ApplicationException {
    assert.equal(tracked.state, 'rejected', 'the call rejected');
    assert.ok(tracked.error instanceof ApplicationException, `a Pip.Services exception, not ${String(tracked.error)}`);
    return tracked.error;
}

function setup(): { subs: MqttSubscriptions; link: FakeLink; backlog: FakeBacklog } {
    const subs = new MqttSubscriptions();
    const link = new FakeLink();
    const backlog = new FakeBacklog();
    subs.attach(link, backlog);
    return { subs, link, backlog };
}

/** Subscribes a listener and answers its SUBSCRIBE with `granted`; resolves once it is confirmed. */
async function subscribed(subs: MqttSubscriptions, link: FakeLink, topic: string, qos: 0 | 1 | 2, who = listener()): Promise<IMqttMessageListener> {
    const call = track(subs.subscribe(filter(topic), { qos }, who));
    await settle();
    link.lastSubscribe().answer.resolve({ code: qos });
    await settle();
    assert.equal(call.state, 'fulfilled', `the subscription to ${topic} at QoS ${qos} is confirmed`);
    return who;
}

/** The listeners of list(), as `topic qos` strings. */
function listed(subs: MqttSubscriptions): string[] {
    return subs.list().map((s) => `${s.topic} ${s.qos}`).sort();
}

describe('MqttSubscriptions', () => {
    describe('subscribe', () => {
        it('sends one SUBSCRIBE per filter, at the highest QoS of the listeners that came before its SUBACK', async () => {
            const { subs, link } = setup();
            const a1 = track(subs.subscribe(filter('a/+'), { qos: 1 }, listener()));
            const b0 = track(subs.subscribe(filter('b/#'), { qos: 0 }, listener()));
            await settle();
            const a0 = track(subs.subscribe(filter('a/+'), { qos: 0 }, listener()));
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/+ 1', 'SUBSCRIBE b/# 0'], 'the second listener of a/+ asks for less: no SUBSCRIBE of its own');
            assert.deepEqual([a1.state, a0.state, b0.state], ['pending', 'pending', 'pending'], 'each waits for its SUBACK');

            (link.sent[0] as Extract<Sent, { kind: 'subscribe' }>).answer.resolve({ code: 1 });
            await settle();
            assert.deepEqual([a1.state, a0.state, b0.state], ['fulfilled', 'fulfilled', 'pending'], 'the SUBACK of a/+ covers both its listeners');
            (link.sent[1] as Extract<Sent, { kind: 'subscribe' }>).answer.resolve({ code: 0 });
            await settle();
            assert.equal(b0.state, 'fulfilled');
            assert.equal(link.sent.length, 2, 'nothing more is sent');
            assert.deepEqual(listed(subs), ['a/+ 0', 'a/+ 1', 'b/# 0']);
        });

        it('listeners that wait together get one SUBSCRIBE at the highest QoS among them', async () => {
            const { subs, link } = setup();
            link.connected = false;
            const calls = ([0, 2, 1] as const).map((qos) => track(subs.subscribe(filter('a/b'), { qos }, listener())));
            await settle();
            assert.equal(link.sent.length, 0, 'nothing is sent while down');
            link.reconnect();
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 2']);
            link.lastSubscribe().answer.resolve({ code: 2 });
            await settle();
            assert.deepEqual(calls.map((c) => c.state), ['fulfilled', 'fulfilled', 'fulfilled']);
            assert.equal(link.sent.length, 1);
        });

        it('sends the options of the listener with the QoS to the broker', async () => {
            const { subs, link } = setup();
            const call = track(subs.subscribe(filter('a/b'), { qos: 2, nl: true, rh: 1 }, listener()));
            await settle();
            const sent = link.lastSubscribe();
            assert.deepEqual(sent.options, { qos: 2, nl: true, rh: 1 });
            assert.equal(sent.resubscribe, false, 'a first SUBSCRIBE is not a resubscription');
            sent.answer.resolve({ code: 2 });
            await settle();
            assert.equal(call.state, 'fulfilled');
        });

        it('resolves a second listener at a lower or the same QoS at once, without a SUBSCRIBE', async () => {
            const { subs, link } = setup();
            await subscribed(subs, link, 'a/b', 1);
            const lower = track(subs.subscribe(filter('a/b'), { qos: 0 }, listener()));
            const same = track(subs.subscribe(filter('a/b'), { qos: 1 }, listener()));
            await settle();
            assert.equal(lower.state, 'fulfilled');
            assert.equal(same.state, 'fulfilled');
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1']);
            assert.deepEqual(listed(subs), ['a/b 0', 'a/b 1', 'a/b 1']);
        });

        it('sends one more SUBSCRIBE, at the higher QoS, for a listener asking for more than the broker holds', async () => {
            const { subs, link } = setup();
            const first = await subscribed(subs, link, 'a/b', 0);
            const higher = track(subs.subscribe(filter('a/b'), { qos: 2 }, listener()));
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 0', 'SUBSCRIBE a/b 2']);
            assert.equal(higher.state, 'pending', 'waits for the SUBACK at QoS 2');
            link.lastSubscribe().answer.resolve({ code: 2 });
            await settle();
            assert.equal(higher.state, 'fulfilled');
            assert.equal(link.sent.length, 2);
            assert.deepEqual(subs.match('a/b').length, 2);
            assert.ok(subs.match('a/b').includes(first));
        });

        it('subscribing the same listener to the same filter again does nothing and resolves', async () => {
            const { subs, link, backlog } = setup();
            const who = await subscribed(subs, link, 'a/b', 1);
            const again = track(subs.subscribe(filter('a/b'), { qos: 1 }, who));
            await settle();
            assert.equal(again.state, 'fulfilled');
            const higher = track(subs.subscribe(filter('a/b'), { qos: 2 }, who));
            await settle();
            assert.equal(higher.state, 'fulfilled', 'at another QoS too: the listener keeps its subscription');
            assert.equal(link.sent.length, 1);
            assert.deepEqual(listed(subs), ['a/b 1'], 'one registration, at its first QoS');
            assert.deepEqual(backlog.calls, ['releaseHeld a/b'], 'the held messages go to a listener once');
        });

        it('refuses a listener whose nl, rap or rh differ from the other listeners of the filter (MQTT_INVALID_OPTIONS), sending nothing', async () => {
            const { subs, link } = setup();
            await subscribed(subs, link, 'a/b', 1);
            for (const options of [{ qos: 1, nl: true }, { qos: 1, rap: true }, { qos: 1, rh: 2 }] as IClientSubscribeOptions[]) {
                const call = track(subs.subscribe(filter('a/b'), options, listener()));
                await settle();
                const err = rejectionOf(call);
                assert.ok(err instanceof BadRequestException, `a BadRequestException for ${JSON.stringify(options)}`);
                assert.equal(err.code, MqttErrorCode.InvalidOptions);
                assert.equal(err.details.getAsString('topic'), 'a/b');
            }
            assert.equal(link.sent.length, 1, 'no SUBSCRIBE for a refused listener');
            assert.equal(subs.list().length, 1, 'the refused listeners are not added');
            // The defaults spelled out are the same options as none.
            const explicit = track(subs.subscribe(filter('a/b'), { qos: 0, nl: false, rap: false, rh: 0 }, listener()));
            await settle();
            assert.equal(explicit.state, 'fulfilled');
        });

        it('adds nothing when the link is down for good (checkUsable throws)', async () => {
            const { subs, link, backlog } = setup();
            const down = new ConnectionException(null as unknown as string, MqttErrorCode.NotConnected, 'down');
            link.unusable = down;
            const call = track(subs.subscribe(filter('a/b'), { qos: 1 }, listener()));
            await settle();
            assert.equal(call.state, 'rejected');
            assert.equal(call.error, down);
            assert.deepEqual(subs.list(), []);
            assert.deepEqual(backlog.calls, []);
            assert.equal(link.sent.length, 0);
        });

        it('refuses subscribe() before attach() and after detach() with MQTT_CLOSED', async () => {
            const subs = new MqttSubscriptions();
            const before = track(subs.subscribe(filter('a/b'), { qos: 0 }, listener()));
            await settle();
            assert.ok(rejectionOf(before) instanceof InvalidStateException);
            assert.equal(rejectionOf(before).code, MqttErrorCode.Closed);

            const link = new FakeLink();
            subs.attach(link, new FakeBacklog());
            await subscribed(subs, link, 'a/b', 0);
            subs.detach();
            assert.deepEqual(subs.list(), [], 'detach() drops every subscription');
            assert.deepEqual(subs.match('a/b'), []);
            const after = track(subs.subscribe(filter('a/b'), { qos: 0 }, listener()));
            await settle();
            assert.equal(rejectionOf(after).code, MqttErrorCode.Closed);
        });
    });

    describe('the broker refuses or downgrades', () => {
        it('a SUBACK refusal rejects the waiting listeners with MQTT_SUBSCRIBE_REJECTED and removes them', async () => {
            const { subs, link } = setup();
            // Both wait for the connection, so that one SUBSCRIBE goes out for both.
            link.connected = false;
            const one = track(subs.subscribe(filter('a/+'), { qos: 1 }, listener()));
            const two = track(subs.subscribe(filter('a/+'), { qos: 1 }, listener()));
            await settle();
            link.reconnect();
            await settle();
            link.lastSubscribe().answer.resolve({ code: 0x80, reasonString: 'not authorized' });
            await settle();
            for (const call of [one, two]) {
                const err = rejectionOf(call);
                assert.ok(err instanceof ConnectionException);
                assert.equal(err.code, MqttErrorCode.SubscribeRejected);
                assert.equal(err.details.getAsInteger('reason_code'), 0x80);
                assert.equal(err.details.getAsString('reason_string'), 'not authorized');
                assert.equal(err.details.getAsString('topic'), 'a/+');
            }
            assert.deepEqual(subs.list(), [], 'the refused listeners are gone');
            assert.deepEqual(subs.match('a/b'), []);
            assert.equal(subs.entries().length, 0, 'and so is the filter');
            assert.deepEqual(link.log(), ['SUBSCRIBE a/+ 1'], 'one SUBSCRIBE for both, and no UNSUBSCRIBE for a filter the broker refused');
        });

        it('a refusal removes only the listeners its SUBSCRIBE was sent for: one that came later gets a SUBSCRIBE of its own', async () => {
            const { subs, link } = setup();
            const early = track(subs.subscribe(filter('a/+'), { qos: 1 }, listener()));
            await settle();
            const late = track(subs.subscribe(filter('a/+'), { qos: 1 }, listener()));
            await settle();
            link.lastSubscribe().answer.resolve({ code: 0x80 });
            await settle();
            assert.equal(rejectionOf(early).code, MqttErrorCode.SubscribeRejected);
            assert.equal(late.state, 'pending', 'the refusal was not an answer for the later listener');
            assert.deepEqual(link.log(), ['SUBSCRIBE a/+ 1', 'SUBSCRIBE a/+ 1']);
            assert.deepEqual(listed(subs), ['a/+ 1']);
            link.lastSubscribe().answer.resolve({ code: 0x80 });
            await settle();
            assert.equal(rejectionOf(late).code, MqttErrorCode.SubscribeRejected);
            assert.deepEqual(subs.list(), []);
            assert.equal(subs.entries().length, 0);
            assert.equal(link.sent.length, 2, 'the reconciliation ends');
        });

        it('a refusal of a higher QoS removes the listeners that asked for it and keeps the confirmed lower ones', async () => {
            const { subs, link } = setup();
            const low = await subscribed(subs, link, 'a/b', 0);
            const high = track(subs.subscribe(filter('a/b'), { qos: 2 }, listener()));
            await settle();
            link.lastSubscribe().answer.resolve({ code: 0x87 });
            await settle();
            assert.equal(rejectionOf(high).code, MqttErrorCode.SubscribeRejected);
            assert.equal(rejectionOf(high).details.getAsInteger('reason_code'), 0x87);
            assert.deepEqual(listed(subs), ['a/b 0']);
            assert.deepEqual(subs.match('a/b'), [low]);
            assert.equal(link.sent.length, 2, 'the broker still holds QoS 0: nothing more to send');
        });

        it('a grant below the QoS asked rejects that listener with MQTT_QOS_NOT_GRANTED and keeps the lower ones', async () => {
            const { subs, link } = setup();
            const low = await subscribed(subs, link, 'a/b', 1);
            const high = track(subs.subscribe(filter('a/b'), { qos: 2 }, listener()));
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'SUBSCRIBE a/b 2']);
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            const err = rejectionOf(high);
            assert.ok(err instanceof ConnectionException);
            assert.equal(err.code, MqttErrorCode.QosNotGranted);
            assert.equal(err.details.getAsInteger('qos'), 2);
            assert.equal(err.details.getAsInteger('granted_qos'), 1);
            assert.deepEqual(listed(subs), ['a/b 1']);
            assert.deepEqual(subs.match('a/b'), [low]);
            assert.equal(link.sent.length, 2);
            assert.equal(link.logger.entries.filter((e) => e.level === LogLevel.Error).length, 0, 'a refused call is no error in the log');
        });

        it('a downgraded SUBSCRIBE still covers the waiting listeners at or below the granted QoS', async () => {
            const { subs, link } = setup();
            const one = track(subs.subscribe(filter('a/b'), { qos: 1 }, listener()));
            const two = track(subs.subscribe(filter('a/b'), { qos: 2 }, listener()));
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1'], 'the second listener came before the SUBACK');
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'SUBSCRIBE a/b 2']);
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            assert.equal(one.state, 'fulfilled');
            assert.equal(rejectionOf(two).code, MqttErrorCode.QosNotGranted);
            assert.deepEqual(listed(subs), ['a/b 1']);
        });

        it('a client error (not a drop) fails the waiting listeners and removes them', async () => {
            const { subs, link } = setup();
            const call = track(subs.subscribe(filter('a/b'), { qos: 1 }, listener()));
            await settle();
            link.lastSubscribe().answer.reject(new Error('client exploded'));
            await settle();
            const err = rejectionOf(call);
            assert.equal(err.code, MqttErrorCode.SubscribeRejected);
            assert.match(err.message, /client exploded/);
            assert.deepEqual(subs.list(), []);
        });
    });

    describe('unsubscribe', () => {
        it('sends UNSUBSCRIBE only when the last listener leaves, and waits for its UNSUBACK', async () => {
            const { subs, link } = setup();
            const one = await subscribed(subs, link, 'a/b', 1);
            const two = listener();
            await subs.subscribe(filter('a/b'), { qos: 0 }, two);

            await subs.unsubscribe('a/b', one);
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1'], 'another listener keeps the subscription');
            assert.deepEqual(subs.match('a/b'), [two]);

            const last = track(subs.unsubscribe('a/b', two));
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'UNSUBSCRIBE a/b']);
            assert.deepEqual(subs.match('a/b'), [], 'the listener gets no more messages at once');
            assert.equal(last.state, 'pending', 'waits for the UNSUBACK');
            link.lastUnsubscribe().answer.resolve();
            await settle();
            assert.equal(last.state, 'fulfilled');
            assert.equal(subs.entries().length, 0, 'the filter is forgotten');
        });

        it('sends a later SUBSCRIBE of the same filter only after the UNSUBSCRIBE was answered', async () => {
            const { subs, link } = setup();
            const one = await subscribed(subs, link, 'a/b', 1);
            const leaving = track(subs.unsubscribe('a/b', one));
            await settle();
            const coming = track(subs.subscribe(filter('a/b'), { qos: 1 }, listener()));
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'UNSUBSCRIBE a/b'], 'the SUBSCRIBE waits for the UNSUBACK');
            link.lastUnsubscribe().answer.resolve();
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'UNSUBSCRIBE a/b', 'SUBSCRIBE a/b 1']);
            assert.equal(coming.state, 'pending');
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            assert.equal(coming.state, 'fulfilled');
            assert.equal(leaving.state, 'fulfilled');
            assert.equal(subs.list().length, 1);
        });

        it('resolves a subscribe() still waiting for the listener, and unsubscribes the filter once its SUBACK came', async () => {
            const { subs, link } = setup();
            const who = listener();
            const waiting = track(subs.subscribe(filter('a/b'), { qos: 1 }, who));
            await settle();
            const leaving = track(subs.unsubscribe('a/b', who));
            await settle();
            assert.equal(waiting.state, 'fulfilled');
            assert.equal(leaving.state, 'fulfilled', 'the broker holds nothing yet: nothing to wait for');
            assert.deepEqual(subs.match('a/b'), []);
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'UNSUBSCRIBE a/b'], 'the broker is not left with a subscription nobody wants');
            link.lastUnsubscribe().answer.resolve();
            await settle();
            assert.equal(subs.entries().length, 0);
        });

        it('rejects with MQTT_CLOSED when the link ends while it waits for the UNSUBACK', async () => {
            const { subs, link } = setup();
            const one = await subscribed(subs, link, 'a/b', 1);
            const call = track(subs.unsubscribe('a/b', one));
            await settle();
            link.ended = true;
            link.drop();
            await settle();
            const err = rejectionOf(call);
            assert.ok(err instanceof InvalidStateException);
            assert.equal(err.code, MqttErrorCode.Closed);
        });

        it('returns at once while the connection is down, and sends the UNSUBSCRIBE after the reconnect', async () => {
            const { subs, link } = setup();
            link.persistent = true;
            const one = await subscribed(subs, link, 'a/b', 1);
            link.drop();
            subs.lost(true);
            const call = track(subs.unsubscribe('a/b', one));
            await settle();
            assert.equal(call.state, 'fulfilled', 'nothing to wait for while down');
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1'], 'not sent while down');
            link.reconnect();
            subs.resumed(true);
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'UNSUBSCRIBE a/b']);
            link.lastUnsubscribe().answer.resolve();
            await settle();
            assert.equal(subs.entries().length, 0);
        });

        it('logs an UNSUBSCRIBE refused after a reconnect (nobody waits for it any more)', async () => {
            const { subs, link } = setup();
            link.persistent = true;
            const one = await subscribed(subs, link, 'a/b', 1);
            link.drop();
            subs.lost(true);
            await subs.unsubscribe('a/b', one);
            link.reconnect();
            await settle();
            const refusal = new ConnectionException(null as unknown as string, MqttErrorCode.UnsubscribeFailed, 'no such subscription');
            link.lastUnsubscribe().answer.reject(refusal);
            await settle();
            const errors = link.logger.entries.filter((e) => e.level === LogLevel.Error);
            assert.equal(errors.length, 1);
            assert.equal(errors[0].error, refusal);
            assert.match(errors[0].message, /Failed to unsubscribe from MQTT topic a\/b after a reconnect/);
        });

        it('rejects with the error of an UNSUBSCRIBE the broker refuses, and forgets the filter', async () => {
            const { subs, link } = setup();
            const one = await subscribed(subs, link, 'a/b', 1);
            const call = track(subs.unsubscribe('a/b', one));
            await settle();
            const refusal = new ConnectionException(null as unknown as string, MqttErrorCode.UnsubscribeFailed, 'refused');
            link.lastUnsubscribe().answer.reject(refusal);
            await settle();
            assert.equal(call.state, 'rejected');
            assert.equal(call.error, refusal);
            assert.equal(subs.entries().length, 0);
            assert.equal(link.sent.length, 2, 'a refused UNSUBSCRIBE is not sent again');
        });

        it('an UNSUBSCRIBE lost under a drop of a persistent session is sent again after the reconnect', async () => {
            const { subs, link } = setup();
            link.persistent = true;
            const one = await subscribed(subs, link, 'a/b', 1);
            const call = track(subs.unsubscribe('a/b', one));
            await settle();
            link.drop();
            link.lastUnsubscribe().answer.reject(link.lostError());
            await settle();
            assert.equal(call.state, 'fulfilled', 'the call does not wait for the reconnect');
            assert.equal(link.sent.length, 2);
            link.reconnect();
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'UNSUBSCRIBE a/b', 'UNSUBSCRIBE a/b']);
        });

        it('an UNSUBSCRIBE lost under a drop of a clean session is not sent again', async () => {
            const { subs, link } = setup();
            const one = await subscribed(subs, link, 'a/b', 1);
            const call = track(subs.unsubscribe('a/b', one));
            await settle();
            link.drop();
            link.lastUnsubscribe().answer.reject(link.lostError());
            await settle();
            link.reconnect();
            subs.resumed(false);
            await settle();
            assert.equal(call.state, 'fulfilled');
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'UNSUBSCRIBE a/b']);
            assert.equal(subs.entries().length, 0);
        });

        it('does nothing for a listener that is not subscribed to the filter', async () => {
            const { subs, link, backlog } = setup();
            await subscribed(subs, link, 'a/b', 1);
            await subs.unsubscribe('a/b', listener());
            await subs.unsubscribe('x/y', listener());
            await settle();
            assert.equal(link.sent.length, 1);
            assert.equal(subs.list().length, 1);
            assert.deepEqual(backlog.calls, ['releaseHeld a/b']);
        });
    });

    describe('after a reconnect', () => {
        it('subscribes every filter again after lost(false) and resumed(false)', async () => {
            const { subs, link } = setup();
            await subscribed(subs, link, 'a/b', 1);
            await subscribed(subs, link, 'c/#', 2);
            link.drop();
            subs.lost(false);
            link.reconnect();
            subs.resumed(false);
            await settle();
            assert.deepEqual(link.log().slice(2).sort(), ['SUBSCRIBE a/b 1', 'SUBSCRIBE c/# 2']);
            for (const sent of link.sent.slice(2)) {
                assert.ok(sent.kind === 'subscribe');
                sent.answer.resolve({ code: sent.options.qos });
            }
            await settle();
            assert.equal(link.sent.length, 4, 'once each');
            assert.deepEqual(listed(subs), ['a/b 1', 'c/# 2']);
        });

        it('resumed(true) sends every filter again as a resubscription (the broker may have lost it)', async () => {
            const { subs, link } = setup();
            await subscribed(subs, link, 'a/b', 1);
            link.drop();
            subs.lost(true);
            link.reconnect();
            subs.resumed(true);
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'SUBSCRIBE a/b 1 resubscribe']);
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            const again = track(subs.subscribe(filter('a/b'), { qos: 1 }, listener()));
            await settle();
            assert.equal(again.state, 'fulfilled');
            assert.equal(link.sent.length, 2, 'verified once: a new listener needs nothing more');
        });

        it('a refused resubscription keeps the confirmed listeners, warns once and asks again with backoff until the broker grants it', async () => {
            const { subs, link } = setup();
            await subscribed(subs, link, 'a/b', 1);
            link.drop();
            subs.lost(true);
            link.reconnect();
            subs.resumed(true);
            await settle();
            link.lastSubscribe().answer.resolve({ code: 0x87 });
            await settle();
            assert.equal(subs.list().length, 1, 'the listener stays');
            assert.equal(subs.match('a/b').length, 1, 'and gets the messages that come');
            await waitUntil(() => link.sent.length === 3, 'the SUBSCRIBE asked again');
            assert.deepEqual(link.log().slice(2), ['SUBSCRIBE a/b 1'], 'asked again, not as a resubscription: the broker holds nothing');
            link.lastSubscribe().answer.resolve({ code: 0x80 });
            await waitUntil(() => link.sent.length === 4, 'the SUBSCRIBE asked once more');
            assert.deepEqual(link.retryAttempts, [0, 1], 'each wait is the next backoff step');
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            const warnings = link.logger.entries.filter((e) => e.level === LogLevel.Warn);
            assert.equal(warnings.length, 1, 'one warning for the outage');
            assert.match(warnings[0].message, /refused the subscription to a\/b again after a reconnect/);
            assert.match(warnings[0].message, /MQTT broker rejected the subscription to a\/b/, 'with the refusal');
            assert.equal(link.logger.entries.filter((e) => e.level === LogLevel.Error).length, 0);
            assert.ok(link.logger.entries.some((e) => e.level === LogLevel.Info && /granted the subscription to a\/b again after 2 refusals/.test(e.message)));
            assert.equal(link.sent.length, 4, 'nothing more once granted');
        });

        it('an unsubscribe() while a refused resubscription waits to ask again settles at once, without an UNSUBSCRIBE (the broker holds nothing)', async () => {
            const { subs, link } = setup();
            link.retryWait = 60_000;
            const l = listener();
            await subscribed(subs, link, 'a/b', 1, l);
            link.drop();
            subs.lost(true);
            link.reconnect();
            subs.resumed(true);
            await settle();
            link.lastSubscribe().answer.resolve({ code: 0x87 });
            await settle();
            const call = track(subs.unsubscribe('a/b', l));
            await waitUntil(() => call.state !== 'pending', 'the unsubscribe() to settle');
            assert.equal(call.state, 'fulfilled');
            assert.deepEqual(subs.list(), []);
            assert.equal(link.sent.length, 2, 'no UNSUBSCRIBE for a filter the broker refused');
        });

        it('a refused resubscription waiting to ask again goes on at the reconnect after a loss', async () => {
            const { subs, link } = setup();
            link.retryWait = 60_000;
            await subscribed(subs, link, 'a/b', 1);
            link.drop();
            subs.lost(true);
            link.reconnect();
            subs.resumed(true);
            await settle();
            link.lastSubscribe().answer.resolve({ code: 0x87 });
            await settle();
            link.drop();
            subs.lost(true);
            link.reconnect();
            subs.resumed(true);
            await waitUntil(() => link.sent.length === 3, 'the SUBSCRIBE at the reconnect');
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            assert.equal(subs.list().length, 1);
        });

        it('a downgrade after a reconnect keeps the listeners, logs an error and refuses new listeners asking for more without a SUBSCRIBE', async () => {
            const { subs, link } = setup();
            const old = await subscribed(subs, link, 'a/b', 2);
            link.drop();
            subs.lost(false);
            link.reconnect();
            subs.resumed(false);
            await settle();
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            assert.deepEqual(subs.match('a/b'), [old], 'the confirmed listener stays');
            const errors = link.logger.entries.filter((e) => e.level === LogLevel.Error);
            assert.equal(errors.length, 1);
            assert.match(errors[0].message, /granted QoS 1 for a\/b after a reconnect/);

            const more = track(subs.subscribe(filter('a/b'), { qos: 2 }, listener()));
            const within = track(subs.subscribe(filter('a/b'), { qos: 1 }, listener()));
            await settle();
            assert.equal(rejectionOf(more).code, MqttErrorCode.QosNotGranted);
            assert.equal(rejectionOf(more).details.getAsInteger('granted_qos'), 1);
            assert.equal(within.state, 'fulfilled');
            assert.equal(link.sent.length, 2, 'the ceiling spares the broker the same question');
            assert.deepEqual(listed(subs), ['a/b 1', 'a/b 2']);
        });

        it('the next reconnect asks for the full QoS again, and a full grant lifts the ceiling', async () => {
            const { subs, link } = setup();
            await subscribed(subs, link, 'a/b', 2);
            for (const granted of [1, 2]) {
                link.drop();
                subs.lost(false);
                link.reconnect();
                subs.resumed(false);
                await settle();
                link.lastSubscribe().answer.resolve({ code: granted });
                await settle();
            }
            const more = track(subs.subscribe(filter('a/b'), { qos: 2 }, listener()));
            await settle();
            assert.equal(more.state, 'fulfilled');
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 2', 'SUBSCRIBE a/b 2', 'SUBSCRIBE a/b 2']);
        });

        it('sends a SUBSCRIBE lost under a drop again once whenConnected() resolves', async () => {
            const { subs, link } = setup();
            const call = track(subs.subscribe(filter('a/b'), { qos: 1 }, listener()));
            await settle();
            link.drop();
            link.lastSubscribe().answer.reject(link.lostError());
            await settle();
            assert.equal(call.state, 'pending', 'a drop is no answer');
            assert.equal(link.sent.length, 1, 'nothing is sent while down');
            link.reconnect();
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 1', 'SUBSCRIBE a/b 1']);
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            assert.equal(call.state, 'fulfilled');
        });

        it('a subscribe() while down waits for the connection before its SUBSCRIBE', async () => {
            const { subs, link } = setup();
            link.connected = false;
            const call = track(subs.subscribe(filter('a/b'), { qos: 0 }, listener()));
            await settle();
            assert.equal(link.sent.length, 0);
            link.reconnect();
            await settle();
            assert.deepEqual(link.log(), ['SUBSCRIBE a/b 0']);
            link.lastSubscribe().answer.resolve({ code: 0 });
            await settle();
            assert.equal(call.state, 'fulfilled');
        });

        it('a subscribe() failing for good while waiting for the connection rejects with that error', async () => {
            const { subs, link } = setup();
            const closed = new InvalidStateException(null as unknown as string, MqttErrorCode.Closed, 'closed');
            link.connected = false;
            link.whenConnected = () => Promise.reject(closed);
            const call = track(subs.subscribe(filter('a/b'), { qos: 0 }, listener()));
            await settle();
            assert.equal(call.error, closed);
            assert.deepEqual(subs.list(), []);
        });
    });

    describe('the backlog of held messages', () => {
        it('gets releaseHeld(match filter, listener) for each newly added listener', async () => {
            const { subs, link, backlog } = setup();
            const one = listener();
            const two = listener();
            const first = track(subs.subscribe(filter('$share/g/jobs/+'), { qos: 1 }, one));
            await settle();
            assert.deepEqual(backlog.calls, ['releaseHeld jobs/+'], 'the filter without $share/<group>/');
            assert.equal(backlog.listeners[0], one);
            link.lastSubscribe().answer.resolve({ code: 1 });
            await settle();
            assert.equal(first.state, 'fulfilled');
            await subs.subscribe(filter('$share/g/jobs/+'), { qos: 1 }, two);
            assert.deepEqual(backlog.calls, ['releaseHeld jobs/+', 'releaseHeld jobs/+']);
            assert.equal(backlog.listeners[1], two);
        });

        it('gets released(match filter) when the last listener leaves, not before', async () => {
            const { subs, link, backlog } = setup();
            const one = await subscribed(subs, link, 'a/+', 1);
            const two = listener();
            await subs.subscribe(filter('a/+'), { qos: 1 }, two);
            backlog.calls.length = 0;
            await subs.unsubscribe('a/+', one);
            assert.deepEqual(backlog.calls, []);
            const last = track(subs.unsubscribe('a/+', two));
            assert.deepEqual(backlog.calls, ['released a/+']);
            await settle();
            link.lastUnsubscribe().answer.resolve();
            await settle();
            assert.equal(last.state, 'fulfilled');
        });
    });
});
