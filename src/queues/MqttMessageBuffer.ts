import type { MessageEnvelope } from 'pip-services3-messaging-nodex';

/** A receive() waiting for the next message. */
interface Waiter {
    resolve(message: MessageEnvelope | null): void;
    timer: NodeJS.Timeout | null;
}

/** Node timers overflow beyond this many milliseconds (about 24.8 days). */
const MAX_TIMER_MS = 2147483647;

/**
 * The messages a queue has received and not yet handed out: a bounded FIFO, plus the
 * receive() calls waiting for the next message (served in call order). No I/O, no polling:
 * a waiter is resolved by the push that brings its message, or by its timer.
 */
export class MqttMessageBuffer {
    private _items: MessageEnvelope[] = [];
    /** Index of the first item in `_items`: shifting is O(1), the array is compacted now and then. */
    private _head = 0;
    private readonly _waiters: Waiter[] = [];

    /** @param limit the most messages kept; a push beyond it is refused. */
    public constructor(public limit: number) {}

    /** How many messages are buffered. */
    public get length(): number {
        return this._items.length - this._head;
    }

    /** How many receive() calls are waiting. */
    public get waiting(): number {
        return this._waiters.length;
    }

    /**
     * Takes a message: it goes to the oldest waiting receive(), or to the end of the buffer.
     * @param beyondLimit keep it even when the buffer is full (its broker holds back more until it is settled).
     * @returns false when the buffer is full and the message was not kept.
     */
    public push(message: MessageEnvelope, beyondLimit = false): boolean {
        const waiter = this._waiters.shift();
        if (waiter) {
            if (waiter.timer) clearTimeout(waiter.timer);
            waiter.resolve(message);
            return true;
        }
        if (this.length >= this.limit && !beyondLimit) return false;
        this._items.push(message);
        return true;
    }

    /** Removes and returns the oldest message, or null when empty. */
    public shift(): MessageEnvelope | null {
        if (this._head >= this._items.length) return null;
        const message = this._items[this._head];
        this._items[this._head] = undefined as unknown as MessageEnvelope;
        this._head++;
        if (this._head === this._items.length) {
            this._items = [];
            this._head = 0;
        } else if (this._head >= 1024 && this._head * 2 >= this._items.length) {
            this._items = this._items.slice(this._head);
            this._head = 0;
        }
        return message;
    }

    /** The oldest `count` messages, without removing them. */
    public peek(count: number): MessageEnvelope[] {
        return this._items.slice(this._head, this._head + count);
    }

    /** Drops every buffered message; waiting receive() calls keep waiting. @returns what was dropped, oldest first. */
    public clear(): MessageEnvelope[] {
        const dropped = this._items.slice(this._head);
        this._items = [];
        this._head = 0;
        return dropped;
    }

    /** Keeps only the buffered messages `keep` accepts, in order. @returns how many went. */
    public filter(keep: (message: MessageEnvelope) => boolean): number {
        const before = this.length;
        this._items = this._items.slice(this._head).filter(keep);
        this._head = 0;
        return before - this.length;
    }

    /**
     * The oldest message, or the next one to arrive within `timeoutMs`, or null after it.
     * Waits on the push (no polling).
     */
    public take(timeoutMs: number): Promise<MessageEnvelope | null> {
        const message = this.shift();
        if (message != null || timeoutMs <= 0) return Promise.resolve(message);
        return new Promise<MessageEnvelope | null>((resolve) => {
            const waiter: Waiter = { resolve, timer: null };
            waiter.timer = setTimeout(() => {
                const index = this._waiters.indexOf(waiter);
                if (index >= 0) this._waiters.splice(index, 1);
                resolve(null);
            }, Math.min(timeoutMs, MAX_TIMER_MS));
            this._waiters.push(waiter);
        });
    }

    /** Resolves every waiting receive() with null (the queue is closing). */
    public releaseWaiters(): void {
        for (const waiter of this._waiters.splice(0)) {
            if (waiter.timer) clearTimeout(waiter.timer);
            waiter.resolve(null);
        }
    }
}
