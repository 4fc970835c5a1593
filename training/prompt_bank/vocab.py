"""Slot vocabularies for the prompt templates: short words and phrases, written by hand for this repo.

Each name in :data:`VOCAB` is a slot that templates use as ``{name}`` (or ``{name_2}`` for a second,
different value of the same slot). Values are phrased to fit every template that uses the slot; longer
texts (sentences and passages to rewrite, classify or summarize) live in :mod:`training.prompt_bank.texts`.
"""

from __future__ import annotations

COUNTRIES = (
    "France", "Japan", "Brazil", "Canada", "Kenya", "Egypt", "India", "Mexico", "Norway", "Australia",
    "Argentina", "Peru", "Chile", "Italy", "Spain", "Portugal", "Germany", "Poland", "Greece", "Turkey",
    "Vietnam", "Thailand", "Indonesia", "the Philippines", "South Korea", "China", "Nigeria", "Ghana",
    "Morocco", "Ethiopia", "South Africa", "New Zealand", "Iceland", "Ireland", "Sweden", "Finland",
    "Denmark", "the Netherlands", "Belgium", "Switzerland", "Austria", "Hungary", "Colombia", "Cuba",
    "Jamaica", "Nepal", "Mongolia", "Pakistan", "Saudi Arabia", "Tanzania",
)

CITIES = (
    "Paris", "Tokyo", "Cairo", "Rome", "Sydney", "Rio de Janeiro", "New York City", "London", "Istanbul",
    "Venice", "Kyoto", "Barcelona", "Amsterdam", "Prague", "Vienna", "Marrakesh", "Cape Town",
    "Buenos Aires", "Mexico City", "Bangkok", "Singapore", "Hong Kong", "Dubai", "Mumbai", "Seoul",
    "Toronto", "Vancouver", "San Francisco", "Chicago", "Lisbon", "Athens", "Edinburgh", "Dublin",
    "Stockholm", "Berlin", "Moscow", "Beijing", "Nairobi", "Lima", "Havana",
)

LANDMARKS = (
    "the Eiffel Tower", "the Great Wall of China", "the pyramids of Giza", "the Colosseum", "Machu Picchu",
    "the Taj Mahal", "Stonehenge", "the Statue of Liberty", "the Grand Canyon", "Mount Everest",
    "the Amazon rainforest", "the Sahara Desert", "the Great Barrier Reef", "Niagara Falls",
    "the Leaning Tower of Pisa", "Angkor Wat", "Petra", "the Golden Gate Bridge", "Big Ben",
    "the Sydney Opera House", "Mount Fuji", "the Dead Sea", "Victoria Falls", "the Galapagos Islands",
    "Yellowstone National Park", "the Acropolis", "Chichen Itza", "the Nile River", "Antarctica",
    "the Mariana Trench",
)

CONTINENTS = ("Africa", "Asia", "Europe", "North America", "South America", "Australia", "Antarctica")

ANIMALS = (
    "elephant", "giraffe", "octopus", "penguin", "dolphin", "honeybee", "owl", "kangaroo", "koala",
    "cheetah", "tiger", "polar bear", "giant panda", "sloth", "hummingbird", "bat", "chameleon", "jellyfish",
    "great white shark", "blue whale", "sea turtle", "frog", "ant", "monarch butterfly", "spider",
    "crocodile", "camel", "horse", "house cat", "dog", "parrot", "bald eagle", "gray wolf", "red fox",
    "rabbit", "hedgehog", "beaver", "squirrel", "platypus", "ostrich", "flamingo", "zebra", "rhinoceros",
    "hippopotamus", "gorilla", "orangutan", "seahorse", "starfish", "snail", "earthworm", "salmon", "crow",
    "peacock", "lion", "moose", "sea otter", "raccoon", "lobster", "firefly", "axolotl",
)

SCIENCE_CONCEPTS = (
    "photosynthesis", "gravity", "the water cycle", "electricity", "magnetism", "evaporation",
    "the greenhouse effect", "DNA", "vaccines", "the immune system", "digestion", "the human heart",
    "sound waves", "static electricity", "friction", "buoyancy", "atoms", "chemical reactions", "fossils",
    "plate tectonics", "black holes", "the solar system", "the food chain", "pollination", "metamorphosis",
    "evolution", "recycling", "solar panels", "wind turbines", "the internet", "batteries", "germs",
    "sleep", "memory", "the seasons", "the phases of the Moon", "tides", "clouds", "erosion", "the Sun",
)

SCIENCE_PHENOMENA = (
    "rainbows", "earthquakes", "volcanic eruptions", "thunder", "lightning", "tides", "the seasons",
    "the Northern Lights", "solar eclipses", "rust", "hiccups", "yawning", "goosebumps", "fog", "hail",
    "echoes", "shooting stars", "leaves changing color in autumn", "ocean waves", "a sunburn",
    "bread rising", "ice melting", "a rainbow after rain", "wind", "snowflakes", "dew on grass",
)

TERMS = (
    "democracy", "inflation", "metaphor", "algorithm", "empathy", "habitat", "ecosystem", "budget",
    "interest rate", "irony", "hypothesis", "renewable energy", "biodiversity", "recession", "citizen",
    "constitution", "synonym", "antonym", "adjective", "adverb", "pronoun", "prime number", "fraction",
    "percentage", "average", "perimeter", "velocity", "acceleration", "momentum", "condensation", "climate",
    "peninsula", "archipelago", "glacier", "tundra", "nutrition", "protein", "vitamin", "calorie",
    "metabolism", "allergy", "bacteria", "virus", "nostalgia", "procrastination", "resilience", "curiosity",
    "gratitude", "etiquette", "sarcasm", "idiom", "proverb", "alliteration", "onomatopoeia",
    "compound interest", "supply and demand", "entrepreneur", "password manager", "web browser",
    "cloud storage", "spreadsheet", "thermostat", "compost", "carbon footprint", "photosynthesis",
    "gravity", "erosion", "migration", "camouflage", "hibernation", "mammal", "reptile", "amphibian",
    "predator", "herbivore", "latitude", "equator", "monsoon", "drought", "volcano", "census", "mortgage",
)

AGES = ("five", "six", "seven", "eight", "nine", "ten")

RELATIVES = (
    "little brother", "little sister", "daughter", "son", "niece", "nephew", "grandson", "granddaughter",
    "younger cousin", "student",
)

HOWTO_TASKS = (
    "boil an egg", "tie a tie", "change a flat bicycle tire", "make a cup of tea", "plant tomato seeds",
    "clean a computer keyboard", "fold a paper airplane", "write a thank-you note", "start a vegetable garden",
    "back up the photos on my phone", "make pancakes from scratch", "remove a coffee stain from a shirt",
    "wash a wool sweater", "set up a fish tank", "learn to juggle three balls", "sharpen a kitchen knife",
    "make a budget for the month", "prepare for a job interview", "train a puppy to sit",
    "improve my handwriting", "build a simple birdhouse", "make homemade bread", "keep houseplants alive",
    "clean a cast iron pan", "pack a suitcase efficiently", "make a paper snowflake", "read a paper map",
    "set up a new email account", "memorize a short poem", "hang a picture frame", "descale a kettle",
    "make cold brew coffee", "organize a small closet", "start running as a beginner", "make a fruit smoothie",
    "change a light bulb safely", "write a good cover letter", "plan a birthday party",
    "give a short speech", "make a simple salad dressing", "unclog a sink drain", "care for a succulent",
    "bake chocolate chip cookies", "iron a dress shirt", "save money on groceries", "fix a squeaky door",
    "sew on a button", "make scrambled eggs", "put together a first aid kit",
    "take better photos with a phone", "clean windows without streaks", "make a paper boat",
    "wrap a gift neatly", "meditate for five minutes", "study for a math test", "compost kitchen scraps",
    "cook rice on the stove", "check the oil in a car", "make a grocery list", "write a short resume",
)

STEP_COUNTS = ("three", "four", "five", "six", "seven")

HOWTO_CONSTRAINTS = (
    "without special tools", "in under ten minutes", "on a small budget", "with kids helping",
    "for the first time", "in a small apartment", "without making a mess", "while traveling",
)

CREATIVE_FORMS = (
    "a short poem", "a haiku", "a limerick", "a four-line rhyme", "a 100-word story", "a two-sentence story",
    "a riddle", "a short fable", "a diary entry", "a song chorus", "a short dialogue", "a bedtime story",
)

CREATIVE_TOPICS = (
    "a cat who wants to fly", "the first day of spring", "a lost umbrella", "the ocean at night",
    "a robot learning to paint", "a rainy Monday morning", "friendship", "a lighthouse keeper",
    "a dragon who is afraid of the dark", "the moon", "a busy bakery", "an old bicycle", "autumn leaves",
    "a snowy village", "a lonely cloud", "a garden after the rain", "a long train journey",
    "a brave little mouse", "homework", "a birthday surprise", "a forgotten key", "the smell of coffee",
    "a city at dawn", "a talking tree", "a pirate who gets seasick", "a penguin on vacation",
    "the last day of summer", "a new pair of shoes", "a thunderstorm", "a quiet library",
    "a grandmother's kitchen", "a kite stuck in a tree", "the stars over a desert", "a sleepy dog",
    "a time traveler's lunch", "a shy ghost", "a lemonade stand", "a messy bedroom", "a snowman in spring",
    "a small boat on a big sea", "the first snow", "a broken clock", "a game of chess",
    "a bee looking for flowers", "a rocket launch", "a farmers market", "a foggy morning",
    "a letter that never arrived", "a mountain hike", "a soccer match", "a magic paintbrush",
    "a cactus in the desert", "a rainy picnic", "an astronaut missing home", "a winding river", "a candle",
    "the sound of rain", "a fox in the snow", "a school concert", "a hidden door",
)

MOODS = (
    "funny", "gentle", "hopeful", "spooky but friendly", "cheerful", "calm", "mysterious", "bittersweet",
    "silly", "adventurous",
)

NAMEABLE_THINGS = (
    "a coffee shop", "a pet goldfish", "a friendly robot", "a book club", "a bakery", "a hiking group",
    "a board game", "a garage band", "a sailboat", "a food truck", "a newly discovered planet",
    "a community garden", "a podcast about cooking", "a lemonade stand", "a school newspaper",
    "a dog-walking business", "a fantasy kingdom", "a racing snail", "a cozy bookstore", "a space station",
)

REWRITE_STYLES = (
    "more formal", "friendlier", "more polite", "shorter", "more exciting", "more professional",
    "easier to read", "more confident", "more positive", "clearer",
)

VOICES = (
    "a pirate", "a sports commentator", "a friendly teacher", "a news reporter", "a medieval knight",
    "a tour guide", "a cheerful robot", "a detective", "a nature documentary narrator", "a game show host",
)

WORD_LIMITS = ("10", "15", "20", "25", "30")

FRUITS = (
    "apple", "banana", "mango", "pear", "cherry", "grape", "kiwi", "pineapple", "plum", "peach", "lemon",
    "strawberry", "watermelon", "apricot", "blueberry", "fig", "papaya", "orange",
)

VEGETABLES = (
    "carrot", "broccoli", "spinach", "onion", "potato", "cabbage", "celery", "lettuce", "cucumber", "pea",
    "beet", "radish", "kale", "leek", "cauliflower", "garlic", "turnip", "asparagus",
)

NOUNS = ("table", "river", "happiness", "teacher", "window", "idea", "mountain", "bicycle", "friend", "city",
         "music", "pencil", "garden", "ocean", "courage")
VERBS = ("run", "whisper", "build", "jump", "think", "swim", "write", "carry", "laugh", "explore", "cook",
         "sing", "climb", "borrow", "forget")
ADJECTIVES = ("bright", "quiet", "heavy", "brave", "tiny", "curious", "gentle", "rough", "ancient", "noisy",
              "shiny", "clever", "lazy", "warm", "empty")

PEOPLE_NAMES = (
    "Maya", "Liam", "Sofia", "Noah", "Aisha", "Lucas", "Emma", "Omar", "Chloe", "Ethan", "Priya", "Mateo",
    "Hana", "Leo", "Zara", "Daniel", "Nora", "Samuel", "Yuki", "Ben", "Fatima", "Jonas", "Grace", "Ravi",
    "Lily", "Carlos", "Ava", "Kofi", "Mia", "Ivan", "Elena", "Tom", "Amara", "Felix", "Rosa", "Hugo",
    "Nadia", "Oscar", "Julia", "Kai",
)

COUNTABLE_ITEMS = (
    "apples", "stickers", "marbles", "pencils", "cupcakes", "books", "seashells", "cookies", "trading cards",
    "balloons", "toy cars", "stamps", "oranges", "flowers", "beads", "crayons", "eggs", "postcards",
    "candles", "buttons", "coins", "bottle caps", "paper cranes", "muffins", "tennis balls",
)

SHOP_ITEMS = (
    "notebook", "sandwich", "museum ticket", "bus pass", "box of crayons", "potted plant", "water bottle",
    "pair of socks", "bag of rice", "movie ticket", "comic book", "loaf of bread", "board game",
    "toy robot", "jar of honey", "backpack", "scarf", "phone case", "bunch of bananas", "puzzle",
)

PLANET_CLUES = (
    "closest to the Sun", "the largest in our solar system", "known as the Red Planet",
    "famous for its bright rings", "the hottest in our solar system", "the farthest from the Sun",
    "tilted on its side", "home to the Great Red Spot",
)

INVENTIONS = (
    "the telephone", "the light bulb", "the printing press", "the airplane", "the World Wide Web",
    "the steam engine", "the radio", "the bicycle", "the television", "the refrigerator", "the camera",
    "the microscope", "the telescope", "the typewriter", "the compass", "paper money", "the calculator",
    "the sewing machine", "the zipper", "the electric battery", "the stethoscope", "the thermometer",
    "the phonograph", "the jet engine", "the ballpoint pen", "the dishwasher", "the traffic light",
    "the microwave oven", "the submarine", "the hot air balloon",
)

PEOPLE = (
    "Marie Curie", "Albert Einstein", "Leonardo da Vinci", "William Shakespeare", "Ada Lovelace",
    "Isaac Newton", "Nelson Mandela", "Frida Kahlo", "Mahatma Gandhi", "Cleopatra", "Galileo Galilei",
    "Jane Austen", "Wolfgang Amadeus Mozart", "Charles Darwin", "Amelia Earhart", "Martin Luther King Jr.",
    "Rosa Parks", "Nikola Tesla", "Florence Nightingale", "Confucius", "Julius Caesar", "Queen Victoria",
    "Abraham Lincoln", "Vincent van Gogh", "Pablo Picasso", "Ludwig van Beethoven", "Harriet Tubman",
    "Neil Armstrong", "Alan Turing", "Rachel Carson", "Aristotle", "Socrates", "Genghis Khan",
    "Joan of Arc", "Hypatia", "Ibn Battuta", "Marco Polo", "Katherine Johnson", "Gregor Mendel",
    "Louis Pasteur",
)

EVENTS = (
    "the French Revolution", "the Renaissance", "the Industrial Revolution", "the Apollo 11 mission",
    "the fall of the Berlin Wall", "the Silk Road trade", "the ancient Olympic Games",
    "the invention of writing", "the California Gold Rush", "the Wright brothers' first flight",
    "the Age of Exploration", "the building of the Panama Canal", "the Black Death", "the Roman Empire",
    "the Cold War", "the American Civil War", "the signing of the Magna Carta",
    "the building of the pyramids", "the discovery of penicillin", "the Great Depression",
    "the first FIFA World Cup", "the Space Race", "the Meiji Restoration", "the abolition of slavery",
    "the women's suffrage movement",
)

LIST_TOPICS = (
    "fruits that are high in vitamin C", "animals that live in the Arctic", "healthy breakfast ideas",
    "indoor hobbies for a rainy day", "famous painters", "board games for families",
    "ways to save water at home", "vegetables that grow well in pots", "countries in South America",
    "musical instruments in an orchestra", "things to pack for a beach trip", "words that rhyme with 'cat'",
    "ways to be kind to a neighbor", "sports played with a ball", "foods that contain protein",
    "simple exercises you can do at home", "jobs that help people", "birds that cannot fly",
    "tips for better sleep", "ideas for a school science project", "renewable energy sources",
    "desserts made with apples", "dog breeds that suit small apartments", "classic children's books",
    "ways to reduce plastic waste", "games to play on a road trip", "questions to ask at a job interview",
    "toppings for a homemade pizza", "types of clouds", "famous inventors", "ways to stay cool in summer",
    "easy houseplants for beginners", "cheap weekend activities", "skills every adult should learn",
    "things to do in a park", "kitchen tools for a beginner cook", "animals that hibernate",
    "things that float on water", "math games for kids", "ways to practice gratitude",
    "herbs to grow on a windowsill", "snacks that are easy to pack", "ways to stay focused while studying",
    "things to check before a long drive", "names for a pet turtle", "reasons to learn a second language",
    "outdoor activities for winter", "parts of a flower", "common kitchen spices", "polite ways to say no",
    "ways to reuse glass jars", "famous bridges", "rivers in Africa", "insects that help gardens",
    "breakfast foods from around the world", "planets in our solar system", "ocean animals",
    "ways to make a small room feel bigger", "fun facts about the human body", "habits of organized people",
)

LIST_COUNTS = ("three", "four", "five", "six", "seven", "eight", "ten")

COMPARE_PAIRS = (
    "cats and dogs as pets", "tea and coffee", "a crocodile and an alligator", "weather and climate",
    "a virus and a bacterium", "a lake and a pond", "a frog and a toad", "a hurricane and a tornado",
    "renting and buying a home", "e-books and paper books", "walking and running for exercise",
    "a laptop and a tablet", "baking soda and baking powder", "a democracy and a monarchy",
    "a comet and an asteroid", "a moth and a butterfly", "a rabbit and a hare", "a violin and a cello",
    "soccer and rugby", "an ocean and a sea", "a mountain and a hill", "a city and a town",
    "a simile and a metaphor", "speed and velocity", "weight and mass", "a meteor and a meteorite",
    "a seal and a sea lion", "a turtle and a tortoise", "a cold and the flu", "saving and investing",
    "a debit card and a credit card", "Python lists and tuples", "RAM and disk storage",
    "a leopard and a cheetah", "a bee and a wasp", "stalactites and stalagmites",
    "a solar eclipse and a lunar eclipse", "latitude and longitude", "an emigrant and an immigrant",
    "a river and a stream", "a poem and a song", "a plant cell and an animal cell", "a star and a planet",
    "a herbivore and a carnivore", "AM and FM radio", "a bus and a train for commuting",
    "fruits and vegetables", "white rice and brown rice", "a shower and a bath", "cycling and swimming",
    "a map and a globe", "a biography and an autobiography", "a wolf and a coyote",
    "a dolphin and a porpoise", "hail and snow", "a novel and a short story", "a museum and a gallery",
    "email and letters", "morning and evening workouts", "a desktop computer and a laptop",
)

SITUATIONS = (
    "I can't fall asleep at night", "I get nervous before exams",
    "I want to start exercising but have no time", "my roommate is always messy",
    "I keep forgetting to drink water", "I feel lonely after moving to a new city",
    "I procrastinate on my homework", "I want to save money for a trip", "my houseplants keep dying",
    "I am starting a new job next week", "I have to give a presentation tomorrow",
    "my dog barks at every noise", "I spend too much time on my phone", "I want to read more books",
    "I argued with a close friend", "I want to learn to cook", "I feel tired every afternoon",
    "my desk is always cluttered", "I want to make friends at a new school",
    "I am bad at remembering names", "I want to ask for a raise",
    "my neighbor plays loud music at night", "I want to learn to play guitar", "I keep losing my keys",
    "I get bored easily at work", "I want to eat more vegetables", "I am moving to a new apartment",
    "I get too many emails", "I am nervous about my first day of college", "I want to run a 5K race",
    "my child does not like reading", "I want to write a book", "I feel stressed about money",
    "I want to wake up earlier", "my team at work does not communicate well",
    "I want to travel alone for the first time", "I have a job interview on Monday",
    "I want to stop biting my nails", "I am planning a small wedding",
    "I want to get better at public speaking", "my garden has too many weeds", "I want to adopt a cat",
    "I keep running late", "I want to learn to swim as an adult", "my grandparents live far away",
    "I want to keep a journal", "I am overwhelmed by chores", "I want to volunteer in my community",
    "I forgot a friend's birthday", "I want to be more organized at work",
    "my eyes get tired from looking at screens", "my kids fight over toys", "I want to start a small business",
    "my home is too noisy to study", "I want to improve my posture", "I am learning to drive",
    "I want to spend less on takeout", "I want to be a better listener", "I can't decide what to study",
    "I have a long flight coming up",
)

TIP_COUNTS = ("two", "three", "four", "five")

RECIPIENTS = (
    "my manager", "my landlord", "my child's teacher", "a coworker", "a customer", "a neighbor",
    "a hiring manager", "my professor", "the school principal", "a hotel", "a restaurant", "my team",
    "a former colleague", "the local library", "a client", "my doctor's office", "an old friend",
    "my building manager", "an online store", "a volunteer group",
)

EMAIL_PURPOSES = (
    "asking for a day off", "thanking them for their help", "asking for an extension on a deadline",
    "reporting a broken heater", "apologizing for missing a meeting", "following up after an interview",
    "inviting them to a small party", "asking about a late order", "requesting a refund",
    "introducing myself", "confirming a meeting time", "asking for a recommendation letter",
    "cancelling a reservation", "sharing good news about a project", "asking for feedback on my work",
    "saying goodbye before I move away", "requesting a meeting next week", "complaining politely about noise",
    "asking a question about homework", "declining an invitation politely", "asking to reschedule an appointment",
    "welcoming them to the team", "congratulating them on a promotion", "asking for directions to the office",
    "reminding them about an unpaid invoice", "offering to help with an event", "sending a project update",
    "asking for a price quote", "requesting time off for a family event", "thanking them for a gift",
)

TONES = ("friendly", "formal", "short and polite", "warm", "professional", "casual", "apologetic", "cheerful")

THANKS_FOR = (
    "a birthday gift", "help with moving", "a great class", "the delicious dinner", "their advice",
    "a job reference", "a warm welcome", "the flowers", "their patience", "a kind review",
    "covering my shift", "lending me a book",
)

CODE_TASKS = (
    "reverses a string", "checks if a number is prime", "counts the vowels in a word",
    "finds the largest number in a list", "removes duplicates from a list", "checks if a word is a palindrome",
    "converts Celsius to Fahrenheit", "returns the factorial of a number",
    "computes the average of a list of numbers", "counts how many times each word appears in a sentence",
    "sorts a list of names alphabetically", "returns the first n Fibonacci numbers",
    "checks whether a year is a leap year", "merges two dictionaries", "flattens a list of lists",
    "finds the second largest number in a list", "capitalizes the first letter of every word",
    "returns the sum of the digits of a number", "checks if two words are anagrams",
    "finds the common items in two lists", "converts a list of strings to uppercase",
    "returns the longest word in a sentence", "reads a text file and counts its lines",
    "generates a random password", "checks if a string contains only digits",
    "rounds a price to two decimal places", "filters out the even numbers from a list",
    "returns the minimum and maximum of a list", "swaps the keys and values of a dictionary",
    "counts the words in a sentence", "calculates the area of a circle", "converts minutes to hours and minutes",
    "checks if a list is sorted", "removes spaces from a string", "returns the last n items of a list",
    "computes compound interest", "finds the index of an item in a list", "groups words by their first letter",
    "converts a number to binary", "checks if a number is even or odd", "prints a multiplication table",
    "returns the median of a list", "counts uppercase letters in a string", "replaces every vowel with a star",
    "splits a list into chunks of three", "removes punctuation from a sentence",
    "finds all numbers below 100 that are divisible by 7", "returns the day of the week for a date",
    "calculates a tip for a restaurant bill", "checks that an email address contains an @ sign",
    "joins a list of words into a sentence", "computes the greatest common divisor of two numbers",
    "squares every number in a list", "reverses the order of words in a sentence",
    "builds a dictionary of letter counts", "sums all the odd numbers in a list",
    "truncates a string to 20 characters", "converts a string to title case", "shuffles a list",
    "counts down from 10 to 1",
)

CONFUSABLES = (
    "'affect' and 'effect'", "'who' and 'whom'", "'fewer' and 'less'", "'lay' and 'lie'", "'its' and 'it's'",
    "'their', 'there' and 'they're'", "'then' and 'than'", "'your' and 'you're'", "'i.e.' and 'e.g.'",
    "'farther' and 'further'", "'imply' and 'infer'", "'lose' and 'loose'", "'principal' and 'principle'",
    "'compliment' and 'complement'", "'accept' and 'except'", "'advice' and 'advise'",
    "'stationary' and 'stationery'", "'bring' and 'take'", "'good' and 'well'", "'among' and 'between'",
)

VOCAB: dict[str, tuple[str, ...]] = {
    "country": COUNTRIES,
    "city": CITIES,
    "landmark": LANDMARKS,
    "continent": CONTINENTS,
    "animal": ANIMALS,
    "science_concept": SCIENCE_CONCEPTS,
    "phenomenon": SCIENCE_PHENOMENA,
    "term": TERMS,
    "age": AGES,
    "relative": RELATIVES,
    "howto_task": HOWTO_TASKS,
    "step_count": STEP_COUNTS,
    "howto_constraint": HOWTO_CONSTRAINTS,
    "form": CREATIVE_FORMS,
    "creative_topic": CREATIVE_TOPICS,
    "mood": MOODS,
    "nameable": NAMEABLE_THINGS,
    "style": REWRITE_STYLES,
    "voice": VOICES,
    "word_limit": WORD_LIMITS,
    "name": PEOPLE_NAMES,
    "item": COUNTABLE_ITEMS,
    "shop_item": SHOP_ITEMS,
    "planet_clue": PLANET_CLUES,
    "invention": INVENTIONS,
    "person": PEOPLE,
    "event": EVENTS,
    "list_topic": LIST_TOPICS,
    "list_count": LIST_COUNTS,
    "pair": COMPARE_PAIRS,
    "situation": SITUATIONS,
    "tip_count": TIP_COUNTS,
    "recipient": RECIPIENTS,
    "purpose": EMAIL_PURPOSES,
    "tone": TONES,
    "thanks_for": THANKS_FOR,
    "code_task": CODE_TASKS,
    "confusable": CONFUSABLES,
}
