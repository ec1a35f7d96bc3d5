export { MqttMessageQueue } from './MqttMessageQueue';
