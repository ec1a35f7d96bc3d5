export { DefaultMqttFactory } from './DefaultMqttFactory';
export { MqttMessageQueueFactory } from './MqttMessageQueueFactory';
export { MqttDescriptors } from './MqttDescriptors';
