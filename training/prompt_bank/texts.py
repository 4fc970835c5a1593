"""Short texts the prompts ask about: sentences to rewrite, passages to summarize, reviews to classify,
sentences with grammar mistakes, jargon to simplify, stand-alone questions and small Python snippets.

All written by hand for this repo (no downloads). Passages are kept short (two or three sentences) so
that a small chat model can answer briefly, and so that two prompts about the same passage still differ
enough in their instructions to pass the near-duplicate filter.
"""

from __future__ import annotations

REWRITE_SENTENCES = (
    "hey can u send me the report by tomorrow",
    "The meeting is moved to Friday at 3 pm because the room is busy.",
    "We regret to inform you that your order will arrive late.",
    "I can't come to the party, sorry.",
    "Please remember to turn off the lights when you leave the office.",
    "The new park opens next week and it has a big playground.",
    "Our team finished the project two days early.",
    "The printer on the second floor is broken again.",
    "thx for the help yesterday, it was great",
    "You forgot to attach the file to your last email.",
    "The store will be closed on Monday for repairs.",
    "I think we should try a different plan.",
    "The bus was late so I missed the first class.",
    "Can you tell me where the train station is?",
    "Dinner is at seven, don't be late.",
    "This product is good but a bit expensive.",
    "The library has extended its opening hours on weekends.",
    "I did not like the movie because it was too long.",
    "We need more volunteers for the book sale.",
    "Your package was delivered to the front desk.",
    "The weather tomorrow will be cold and windy.",
    "I am writing to ask about the job you posted.",
    "The kids had a lot of fun at the science museum.",
    "Please pay the invoice by the end of the month.",
    "The coffee machine in the kitchen needs cleaning.",
    "I finally finished reading that long book.",
    "The concert was cancelled because of the storm.",
    "We are out of milk, can you buy some?",
    "The app keeps crashing when I open my photos.",
    "Thanks for waiting, your table is ready now.",
    "The class will start ten minutes late today.",
    "I lost my wallet somewhere in the mall.",
    "The team meeting was long and nobody made a decision.",
    "Our prices will go up by five percent next month.",
    "The hotel room was clean but the bed was hard.",
    "Please do not park in front of the garage door.",
    "The test results will be ready on Thursday.",
    "i need that money back asap",
    "We are happy to welcome three new members to the club.",
    "The road to the beach is closed for construction.",
    "My flight got delayed by four hours.",
    "Remember to bring your own water bottle to the hike.",
    "The new manager wants everyone to arrive before nine.",
    "This recipe takes too long to make on a weekday.",
    "The museum is free for children under twelve.",
)

PASSAGES = (
    "The town library will open a new reading room next month. The room has large windows, comfortable "
    "chairs and a small section for comic books. Entry is free for everyone with a library card.",
    "Honeybees visit thousands of flowers every day to collect nectar. While they do this, they carry "
    "pollen from one flower to another, which helps plants make seeds and fruit.",
    "A local bakery started giving its unsold bread to a food bank each evening. The owner says the idea "
    "came from a customer. Since March, the bakery has donated more than two thousand loaves.",
    "Regular walking is one of the easiest ways to stay healthy. It strengthens the heart, improves mood "
    "and needs no equipment. Doctors often suggest about thirty minutes a day.",
    "The city council voted to add new bike lanes on three main streets. Supporters say the lanes will "
    "make cycling safer, while some shop owners worry about losing parking spaces.",
    "Octopuses are known for their intelligence. They can open jars, escape from tanks and change the "
    "color of their skin in less than a second to hide from predators.",
    "Our school held its first science fair on Saturday. Students built volcanoes, tested which paper "
    "towels absorb the most water, and showed a robot made from recycled parts.",
    "Sleep helps the brain store new memories. People who sleep well after learning something tend to "
    "remember it better the next day than people who stay up late.",
    "The old railway bridge was repaired this summer and reopened as a path for walkers and cyclists. "
    "On the first weekend, more than five hundred people crossed it.",
    "Tomatoes grow best in warm weather and need at least six hours of sunlight a day. Water them at the "
    "base of the plant, not on the leaves, to help prevent disease.",
    "A new study found that children who read for fun every day have a larger vocabulary. The "
    "researchers say the type of book matters less than the habit of reading.",
    "The museum's new dinosaur exhibit includes a full skeleton of a Triceratops. Visitors can also touch "
    "real fossil fragments and watch a short film about how fossils form.",
    "Many people feel tired in the afternoon after lunch. A short walk, a glass of water or a few minutes "
    "of fresh air can help more than another cup of coffee.",
    "The company announced that employees can work from home two days a week. Managers hope the change "
    "will reduce commuting time and make staff happier.",
    "Recycling one aluminum can saves enough energy to power a television for about three hours. "
    "Aluminum can be recycled again and again without losing quality.",
    "The weekend market moved to the central square. It now has more space for food stalls, a stage for "
    "local musicians and a corner where children can paint.",
    "Volcanoes form where melted rock, called magma, rises through cracks in the Earth's crust. When the "
    "pressure becomes too high, the volcano can erupt.",
    "Learning a musical instrument takes patience. Short daily practice sessions usually work better "
    "than one long session a week, because the brain needs regular repetition.",
    "The swimming pool will close for two weeks in August for cleaning and repairs. Members can use the "
    "pool in the nearby sports center at no extra cost during that time.",
    "Penguins cannot fly, but they are excellent swimmers. Their wings work like flippers, and some "
    "species can dive deeper than two hundred meters to catch fish.",
    "A small village in the mountains now gets all of its electricity from solar panels and a wind "
    "turbine. Residents say their bills have dropped and the power is more reliable.",
    "The team lost its first three games of the season but won the final match. The coach said the "
    "players never stopped working hard and learned from every loss.",
    "Drinking enough water helps the body control its temperature and keeps the joints moving smoothly. "
    "Many people only notice they are thirsty when they are already a little dehydrated.",
    "The theater group is looking for volunteers to build sets and sew costumes for its spring show. "
    "No experience is needed, and training will be provided.",
    "Trees in cities do more than look nice. They give shade, cool the streets on hot days and clean the "
    "air by trapping dust.",
    "The airline changed its baggage rules. Passengers may now bring one small bag for free, but larger "
    "carry-on suitcases will cost an extra fee.",
    "Elephants communicate with low rumbling sounds that travel for kilometers. Other elephants can feel "
    "these vibrations through their feet.",
    "The new phone update adds a dark mode and longer battery life. Some users report that the update "
    "takes almost an hour to install.",
    "Composting turns kitchen scraps like fruit peels and coffee grounds into rich soil. It also reduces "
    "the amount of waste sent to landfills.",
    "A girl in our neighborhood started a lending box for books on her front fence. Neighbors take a book "
    "and leave another, and the box is almost always full.",
    "The moon has no air and no weather, so the footprints left by astronauts in 1969 are probably still "
    "there today.",
    "The café on Main Street now offers a discount to customers who bring their own cups. The owner hopes "
    "to cut the number of paper cups thrown away each week.",
    "Scientists found a new species of frog in a rainforest in South America. The frog is smaller than a "
    "coin and has bright orange spots on its back.",
    "Reading food labels can help people eat better. Labels show the amount of sugar, salt and fat in a "
    "product, as well as the serving size.",
    "The school will start fifteen minutes later next year. Teachers hope students will be more awake "
    "and focused in their first class.",
    "Camels can go many days without drinking water. They store fat, not water, in their humps, and use "
    "it for energy when food is scarce.",
    "Heavy rain caused the river to rise above its banks on Tuesday. Several roads were closed, but no "
    "one was hurt, and the water is expected to go down by Friday.",
    "Writing a to-do list in the morning can make a day feel less stressful. Crossing off finished tasks "
    "also gives a small sense of progress.",
)

REVIEWS = (
    "The pizza arrived hot and the crust was perfect. I will order again.",
    "The hotel staff were rude and our room smelled of smoke.",
    "It does the job. Nothing special, nothing terrible.",
    "Best headphones I have ever owned. The sound is crystal clear.",
    "The shoes fell apart after two weeks. Very disappointed.",
    "Delivery was on time, and the package was fine.",
    "This book made me laugh and cry. I could not put it down.",
    "The app is slow and crashes every time I try to log in.",
    "The museum was okay, but a bit small for the ticket price.",
    "Our waiter was friendly and the dessert was amazing.",
    "The blender is loud, but it makes great smoothies.",
    "I waited forty minutes on the phone and nobody helped me.",
    "The park is clean and the playground is great for young kids.",
    "The movie was long and the ending made no sense.",
    "Works as described. Battery lasts about a day.",
    "Absolutely love this jacket. Warm, light and it looks great.",
    "The paint started peeling after one month.",
    "The class was well organized and the teacher explained everything clearly.",
    "Average coffee, average price, nice view.",
    "The charger stopped working after a week and support never replied.",
    "Fresh vegetables and friendly farmers. My favorite market in town.",
    "The tent kept us dry during a night of heavy rain.",
    "Too salty. I could not finish my soup.",
    "The bus was on time, though the seats were a bit uncomfortable.",
    "Wonderful service from start to finish. Highly recommended.",
    "The instructions were confusing and two screws were missing.",
    "The game is fun for the first hour and then gets repetitive.",
    "Great value for money. My kids use it every day.",
    "The hotel breakfast was fine, nothing more.",
    "The gym is always crowded and half the machines are broken.",
)

CUSTOMER_MESSAGES = (
    "My order arrived with a cracked screen. I want a replacement.",
    "Do you ship to Canada, and how long does it take?",
    "Your team fixed my problem in five minutes. Thank you so much!",
    "I was charged twice for the same order.",
    "What time does your store open on Sundays?",
    "The delivery driver was very kind and careful with my package.",
    "The size chart on your website is wrong, and now my shirt does not fit.",
    "Can I change the color of my order before it ships?",
    "I love the new update, the app is much faster now.",
    "Nobody has answered my emails for a week.",
    "Is this jacket waterproof or only water-resistant?",
    "The instructions were clear and setup took only a few minutes. Great job.",
    "My subscription renewed even though I cancelled it last month.",
    "How do I reset my password?",
    "The staff at your downtown branch went above and beyond to help me.",
    "The product smells strange and I am worried it is damaged.",
    "Do you offer student discounts?",
    "Thanks for the quick refund, I appreciate it.",
    "The website keeps logging me out when I try to pay.",
    "Can I pick up my order in the store instead of having it delivered?",
)

HEADLINES = (
    "Local team wins championship after dramatic final minute",
    "Scientists discover water ice in a crater on the Moon",
    "City council approves budget for new public library",
    "Popular singer announces world tour for next summer",
    "Tech company reports record profits this quarter",
    "New study links daily walks to better sleep",
    "Election results expected late tonight as votes are counted",
    "Olympic swimmer breaks world record in the 200 meters",
    "Streaming service raises prices for the second time this year",
    "Researchers grow tomatoes in simulated Martian soil",
    "Parliament debates new law on online privacy",
    "Award-winning film director releases first animated movie",
    "Stock markets fall as investors worry about interest rates",
    "Marathon runners brave heavy rain in annual city race",
    "Telescope captures sharp images of a distant galaxy",
    "Small bakery becomes national chain in five years",
    "Mayor promises more bus routes in the suburbs",
    "Comedy show tops the ratings for a third week",
    "Engineers test a battery that charges in five minutes",
    "Tennis star withdraws from tournament with wrist injury",
    "Ministers meet to discuss new trade agreement",
    "Museum opens exhibition of ancient Egyptian jewelry",
    "Start-up raises money to build electric delivery bikes",
    "Doctors report success with new treatment for allergies",
    "Basketball team signs young player from Spain",
)

STATEMENTS = (
    "Water boils at 100 degrees Celsius at sea level.",
    "Summer is the best season of the year.",
    "The Pacific is the largest ocean on Earth.",
    "Cats make better pets than dogs.",
    "A week has seven days.",
    "Chocolate ice cream is the most delicious flavor.",
    "The Earth orbits the Sun.",
    "Homework should be banned in primary school.",
    "Spiders have eight legs.",
    "Reading on paper is more relaxing than reading on a screen.",
    "Mount Everest is the highest mountain above sea level.",
    "Jazz is more interesting than pop music.",
    "Plants need sunlight to make their food.",
    "Mornings are the most productive time of day.",
    "There are 24 hours in a day.",
    "Soccer is the most exciting sport to watch.",
    "The human heart has four chambers.",
    "Everyone should learn to play an instrument.",
    "Ice is less dense than liquid water.",
    "City life is better than country life.",
    "Bats are mammals.",
    "Winter holidays are more fun than summer holidays.",
    "Light travels faster than sound.",
    "Paper books will never go out of style.",
    "Sharks are fish.",
    "Learning history is more useful than learning art.",
    "The Amazon is a rainforest in South America.",
    "Breakfast is the most important meal of the day.",
    "Gold is a metal.",
    "Rainy days are perfect for staying inside.",
)

SPAM_SNIPPETS = (
    "Congratulations! You have won a free cruise. Click here to claim your prize now!",
    "Hi Sam, are we still meeting for lunch on Thursday at noon?",
    "URGENT: your account will be closed unless you confirm your password today.",
    "Attached is the agenda for tomorrow's team meeting.",
    "Earn $5,000 a week from home with this one simple trick!",
    "Your library books are due back on Friday. You can renew them online.",
    "Dear customer, we noticed unusual activity. Send us your bank details to verify.",
    "Thanks for your order! Your package will ship in two business days.",
    "You are our lucky winner! Reply with your address to receive your gift card.",
    "Reminder: the parent-teacher meeting is on Wednesday at 6 pm.",
    "Lose 10 kilos in one week with this miracle pill, no diet needed!",
    "Here are the photos from Saturday's hike. Great day, everyone!",
    "Limited offer!!! Buy cheap watches now, 90% off, only today!!!",
    "Can you review my draft before I send it to the client?",
    "Your free trial has ended. Click this link and enter your card number to keep access.",
    "The plumber will come on Monday morning between 9 and 11.",
    "A distant relative left you millions. Send a small fee to release the money.",
    "Happy birthday! Hope you have a wonderful day.",
    "Final notice: claim your tax refund by entering your details at this link.",
    "The book club will discuss chapters 5 to 8 next week.",
)

BAD_SENTENCES = (
    "She don't like apples.", "Me and him goes to the park every day.", "Their going to the store later.",
    "I has three cat.", "The dog wagged it's tail.", "He runned to the bus stop.", "We was late for class.",
    "Who's book is this?", "Your the best friend ever.", "I seen that movie yesterday.",
    "There is many reasons to stay.", "She can sings very well.", "They was happy with the results.",
    "The childs are playing outside.", "I didn't saw nothing.", "He go to school by bus.",
    "Its raining outside today.", "Between you and I, the plan is bad.", "The informations are on the table.",
    "She is more taller than her sister.", "I am agree with you.", "Can you borrow me a pen?",
    "He don't know the answer.", "We goes shopping every Saturday.", "Less people came than we expected.",
    "The team have won there first game.", "I have went to Paris twice.", "Each of the students have a book.",
    "Me and my sister likes pizza.", "She did good on the test.", "I could of helped you.",
    "He is taller then me.", "Alot of people were there.", "The book was wrote in 1990.",
    "Everyone have their own opinion.", "We was supposed to meet at noon.",
    "She have been working here since three years.", "He sings good.", "The news are very surprising.",
    "My brother he works at a bank.", "Them shoes are too small.", "I writed a letter to my grandma.",
    "She suggested me to read the book.", "There car is parked outside.", "I goed to the zoo last week.",
    "The cat is sleeping on it's bed.", "He has less friends than his brother.", "Does she has a bike?",
    "I am living here since 2019.", "The weather is more hotter today.",
)

COMPLEX_SENTENCES = (
    "The municipality will implement a comprehensive strategy to ameliorate traffic congestion.",
    "Participants are required to furnish documentation substantiating their eligibility.",
    "The committee has reached a consensus to postpone the deliberations indefinitely.",
    "Prolonged exposure to ultraviolet radiation may precipitate dermatological complications.",
    "The organization is committed to leveraging synergies to optimize stakeholder value.",
    "Consumption of food and beverages is prohibited within the confines of the laboratory.",
    "The applicant's submission was deemed incomplete and consequently could not be processed.",
    "Remuneration will be commensurate with qualifications and prior professional experience.",
    "Inclement weather conditions necessitated the cancellation of all scheduled departures.",
    "The physician recommended a reduction in the intake of sodium to mitigate hypertension.",
    "The tenant is obligated to notify the landlord of any malfunction in a timely manner.",
    "The initiative aims to facilitate the acquisition of literacy skills among adult learners.",
    "Utilization of personal electronic devices is discouraged during the examination period.",
    "The findings indicate a statistically significant correlation between sleep duration and mood.",
    "Subsequent to the merger, the company underwent an extensive restructuring of its departments.",
    "The vehicle's fuel efficiency diminishes considerably at elevated velocities.",
    "All personnel must vacate the premises expeditiously upon activation of the alarm.",
    "The proliferation of invasive species poses a substantial threat to indigenous ecosystems.",
    "Customers who fail to remit payment by the due date will incur a supplementary charge.",
    "The software update rectifies several vulnerabilities and enhances overall system stability.",
    "Adequate hydration is essential for the maintenance of optimal cognitive performance.",
    "The ordinance prohibits the discharge of fireworks within municipal boundaries.",
    "The professor elucidated the theoretical underpinnings of the experiment in considerable detail.",
    "Precipitation is anticipated to intensify throughout the latter portion of the afternoon.",
    "The warranty is rendered void if the device is subjected to unauthorized modifications.",
    "The patient exhibited a marked improvement following the administration of the medication.",
    "Notwithstanding the aforementioned concerns, the board elected to proceed with the acquisition.",
    "The curriculum endeavors to cultivate critical thinking and collaborative problem solving.",
    "Individuals experiencing persistent symptoms are advised to seek medical consultation promptly.",
    "The facility operates at diminished capacity due to ongoing maintenance activities.",
    "The canine exhibited considerable enthusiasm upon the arrival of its owner.",
    "It is imperative that all correspondence be retained for a minimum of seven years.",
    "The excavation yielded numerous artifacts of considerable historical significance.",
    "The proposal was rejected owing to insufficient allocation of financial resources.",
    "Photosynthetic organisms convert luminous energy into chemical energy stored in glucose.",
    "Residents are encouraged to minimize nonessential water usage during the drought.",
    "The manuscript necessitates substantial revision prior to its consideration for publication.",
    "The establishment reserves the right to refuse service to any individual.",
    "Attendance at the orientation session is mandatory for all incoming employees.",
    "The infrastructure project encountered unforeseen delays attributable to supply shortages.",
)

CHILD_QUESTIONS = (
    "Why is the sky blue?", "Why do cats purr?", "Where does rain come from?", "Why do we need to sleep?",
    "How do birds fly?", "Why is the ocean salty?", "Why do leaves fall off trees?",
    "How does a seed turn into a plant?", "Why does the Moon change shape?", "Why do we have to brush our teeth?",
    "What are stars made of?", "Why do zebras have stripes?", "How do fish breathe underwater?",
    "Why do we get hungry?", "Where do butterflies come from?", "Why is snow white?",
    "Why can't people breathe underwater?", "How do airplanes stay in the sky?", "Why do dogs wag their tails?",
    "What makes thunder so loud?", "Why do onions make people cry?", "How does a rainbow get its colors?",
    "Why do we have fingernails?", "Where does the Sun go at night?", "Why do bees make honey?",
    "How do plants drink water?", "Why do we have bones?", "Why is grass green?",
    "How do caterpillars become butterflies?", "Why do we sneeze?",
)

FACTUAL_QUESTIONS = (
    "Why do we have leap years?", "How do vaccines train the immune system?", "Why does ice float on water?",
    "How does a refrigerator keep food cold?", "What causes the seasons on Earth?",
    "How do noise-cancelling headphones work?", "Why do we see lightning before we hear thunder?",
    "How does a compass find north?", "What is the difference between a virus and bacteria?",
    "How do solar panels make electricity?", "Why do some animals hibernate?",
    "How does a bill become a law in a democracy?", "What does a central bank do?",
    "How does GPS know where I am?", "Why is the Dead Sea so salty?", "How do bees communicate?",
    "What makes a rainbow appear?", "How does the heart pump blood?", "Why do metals conduct electricity?",
    "How do airplanes fly?", "What causes inflation?", "How is paper made?", "Why do onions make us cry?",
    "How does a microwave oven heat food?", "What is the tallest building in the world?",
    "How many continents are there, and what are they?", "Why do stars twinkle?",
    "How does a touch screen detect a finger?", "What does the World Health Organization do?",
    "How are mountains formed?", "Why does bread go stale?", "How does recycling plastic work?",
    "What is the speed of light?", "Why do we have time zones?", "How do elections work in a parliament?",
    "How does a camera capture a photo?", "Why is the Amazon rainforest important?",
    "How do submarines dive and surface?", "What is the largest desert in the world?",
    "How do tides work?",
)

SCIENCE_QUESTIONS = (
    "How many bones are in the adult human body?", "What is the boiling point of water at sea level?",
    "What gas do plants take in from the air?", "What is the chemical symbol for gold?",
    "Which planet has the most moons?", "What is the hardest natural material?",
    "How many chambers does the human heart have?", "What is the largest organ of the human body?",
    "What is the freezing point of water in Fahrenheit?", "Which gas makes up most of Earth's air?",
    "How long does light from the Sun take to reach Earth?", "What is the smallest planet in our solar system?",
    "What part of the cell contains DNA?", "What is the most common element in the universe?",
    "How many teeth does an adult human usually have?", "What is the largest mammal on Earth?",
    "What is the center of an atom called?", "What force keeps the planets in orbit around the Sun?",
    "Which blood cells fight infections?", "What is the chemical formula of water?",
    "What is the fastest land animal?", "How many legs does an insect have?",
    "What is the name of the galaxy we live in?", "Which metal is liquid at room temperature?",
    "What type of rock is formed from cooled lava?", "What organ cleans the blood in the human body?",
    "What do you call an animal that eats only plants?", "Which vitamin does sunlight help our body make?",
    "What is the study of weather called?", "How many hearts does an octopus have?",
)

PY_SNIPPETS = (
    "print(sum(range(1, 11)))",
    "print([x * 2 for x in [1, 2, 3]])",
    "print('hello'[::-1])",
    "print(len('banana'))",
    "print({'a': 1, 'b': 2}.get('c', 0))",
    "print(sorted([3, 1, 2], reverse=True))",
    "print(' '.join(['good', 'morning']))",
    "print(10 // 3, 10 % 3)",
    "print([n for n in range(10) if n % 3 == 0])",
    "print('Python'.upper().count('O'))",
    "print(max(['kiwi', 'apple', 'fig'], key=len))",
    "print(list(zip([1, 2], ['a', 'b'])))",
    "print(2 ** 10)",
    "print(set([1, 1, 2, 3, 3]))",
    "print('a,b,c'.split(','))",
    "print(round(3.14159, 2))",
    "print(any(x > 5 for x in [1, 7, 3]))",
    "print([len(w) for w in 'the quick fox'.split()])",
    "print(dict.fromkeys('abc', 0))",
    "print(list(range(10, 0, -3)))",
)

BUGGY_SNIPPETS = (
    "def add(a, b):\n    return a - b",
    "for i in range(5)\n    print(i)",
    "name = input('Name: ')\nprint('Hello, ' + Name)",
    "numbers = [1, 2, 3]\nprint(numbers[3])",
    "def is_even(n):\n    return n % 2 == 1",
    "total = 0\nfor x in [1, 2, 3]:\ntotal += x",
    "age = '30'\nprint(age + 5)",
    "def greet():\n    print('hi')\ngreet",
    "if x = 5:\n    print('five')",
    "words = ['a', 'b']\nwords.push('c')",
    "def average(xs):\n    return sum(xs) / len(xs) + 1",
    "count = 0\nwhile count < 3:\n    print(count)",
)
